// The one way a streamed output reaches its final name (JSONL and Arrow writers, merge):
// validate and lock `<out>` (lib/io/output.ts), write `<out>.partial` at explicit positions,
// then fsync + rename; with a manifest spec, `<out>.gainrag.json` is published after the rename
// (lib/io/manifest.ts). A reader never sees a half-written file under the final name, and the
// format-specific writers keep only their encoding.
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { GainragError, ioError } from '../errors.js';
import { claimOutput, validateOutput, writeFileAtomic, type OutputLock } from './output.js';
import { MANIFEST_FORMAT, inputIdentity, manifestPath, removeManifest, type ManifestSpec, type OutputManifest } from './manifest.js';

export interface PartialFileOptions {
  /** Files the run reads: the output may not be one of them. */
  inputs?: string[];
  /** Reopen an existing `<out>.partial` ('r+') instead of starting a new one. */
  append?: boolean;
  /** A lock the caller already holds on the output: used as is and left to the caller to release. */
  lock?: OutputLock;
  /** Publish `<out>.gainrag.json` with the output. `inputIdentity` carries one found earlier (merge). */
  manifest?: ManifestSpec & { inputIdentity?: OutputManifest['input'] };
  /** Name used in messages. */
  label?: string;
}

export class PartialFile {
  readonly path: string;
  readonly partialPath: string;
  /** True when an existing partial file was reopened (append). */
  readonly resumed: boolean;
  /** Write position (the file is written at explicit offsets: an fd opened 'r+' starts at 0). */
  position = 0;
  private fdValue: number | undefined;
  private lock: OutputLock | undefined;
  private readonly ownLock: boolean;
  private readonly manifest: Omit<OutputManifest, 'records'> | undefined;

  private constructor(file: string, fd: number, resumed: boolean, lock: OutputLock, ownLock: boolean, manifest: Omit<OutputManifest, 'records'> | undefined) {
    this.path = file;
    this.partialPath = `${file}.partial`;
    this.fdValue = fd;
    this.resumed = resumed;
    this.lock = lock;
    this.ownLock = ownLock;
    this.manifest = manifest;
  }

  /** Validates and locks `file`, then opens its partial file. Errors: E_INVALID_ARG, E_LOCKED, E_IO. */
  static open(file: string, options: PartialFileOptions = {}): PartialFile {
    let lock = options.lock;
    if (lock) validateOutput(file, 'file', { inputs: options.inputs, label: options.label });
    else lock = claimOutput(file, 'file', { inputs: options.inputs, label: options.label }).lock;
    const ownLock = !options.lock;
    const partial = `${file}.partial`;
    try {
      // The input is identified as it is when the run starts reading it.
      const m = options.manifest;
      const manifest = m
        ? { format: MANIFEST_FORMAT, stage: m.stage, settings: m.settings, input: m.inputIdentity !== undefined ? m.inputIdentity : m.input ? inputIdentity(m.input) : null, range: m.range ? { start: m.range.start, end: m.range.end } : null } as const
        : undefined;
      if (!options.append) removeManifest(file);
      const resume = Boolean(options.append) && existsSync(partial);
      const fd = openSync(partial, resume ? 'r+' : 'w');
      return new PartialFile(file, fd, resume, lock, ownLock, manifest);
    } catch (err) {
      if (ownLock) lock.release();
      throw ioError(err, `cannot open ${partial} for writing`);
    }
  }

  get open(): boolean {
    return this.fdValue !== undefined;
  }

  /** The partial file's descriptor. Errors: E_IO when closed. */
  get fd(): number {
    if (this.fdValue === undefined) throw new GainragError('E_IO', `${this.path}: writer is closed`);
    return this.fdValue;
  }

  /** Writes `data` at the current position. */
  write(data: Uint8Array): void {
    const fd = this.fd;
    try {
      for (let off = 0; off < data.length; ) {
        const n = writeSync(fd, data, off, data.length - off, this.position);
        off += n;
        this.position += n;
      }
    } catch (err) {
      throw ioError(err, `${this.partialPath}: write failed`);
    }
  }

  /** fsync, close, rename onto the final name, then the manifest (`records` in the output). */
  publish(records: number): void {
    if (this.fdValue === undefined) return;
    const fd = this.fdValue;
    this.fdValue = undefined;
    try {
      fsyncSync(fd);
      closeSync(fd);
      // A process stopped for longer than the lock's heartbeat limit may have lost the lock to
      // another run, which now writes the same partial file: publishing it would be garbage.
      if (this.lock && !this.lock.owned()) {
        throw new GainragError('E_LOCKED', `${this.path}: the output lock ${this.lock.path} was taken over by another run while this one wrote; not published`);
      }
      // The old manifest goes first: it describes the file the rename replaces.
      removeManifest(this.path);
      renameSync(this.partialPath, this.path);
      if (this.manifest) writeFileAtomic(manifestPath(this.path), `${JSON.stringify({ ...this.manifest, records }, null, 1)}\n`);
    } catch (err) {
      throw ioError(err, `${this.path}: cannot finish the output`);
    } finally {
      this.releaseLock();
    }
  }

  /**
   * Publishes a file made from the partial one (Parquet from the Arrow stream in OUT.partial):
   * `convert` writes it into `<out>.partial.convert`, which is fsynced and renamed onto `<out>`;
   * OUT.partial is then removed. On failure the converted file is removed and the writer stays
   * open (for discard). Errors: those of `convert`, E_IO.
   */
  async publishConverted(records: number, convert: (write: (bytes: Uint8Array) => void) => Promise<void>): Promise<void> {
    const fd = this.fd;
    const target = `${this.partialPath}.convert`;
    let out: number | undefined;
    try {
      rmSync(target, { force: true });
      out = openSync(target, 'wx');
      let at = 0;
      const o = out;
      await convert((data) => {
        for (let off = 0; off < data.length; ) {
          const n = writeSync(o, data, off, data.length - off, at);
          off += n;
          at += n;
        }
      });
      fsyncSync(out);
      closeSync(out);
      out = undefined;
    } catch (err) {
      if (out !== undefined) closeSync(out);
      rmSync(target, { force: true });
      if (err instanceof GainragError) throw err;
      throw ioError(err, `${this.path}: cannot write the output`);
    }
    this.fdValue = undefined;
    try {
      closeSync(fd);
      removeManifest(this.path);
      renameSync(target, this.path);
      rmSync(this.partialPath, { force: true });
      if (this.manifest) writeFileAtomic(manifestPath(this.path), `${JSON.stringify({ ...this.manifest, records }, null, 1)}\n`);
    } catch (err) {
      rmSync(target, { force: true });
      throw ioError(err, `${this.path}: cannot finish the output`);
    } finally {
      this.releaseLock();
    }
  }

  /** Closes without publishing; the partial file is removed unless `keep`. */
  discard(keep = false): void {
    if (this.fdValue === undefined) return;
    const fd = this.fdValue;
    this.fdValue = undefined;
    try {
      closeSync(fd);
      if (!keep) rmSync(this.partialPath, { force: true });
    } finally {
      this.releaseLock();
    }
  }

  private releaseLock(): void {
    if (this.ownLock) this.lock?.release();
    this.lock = undefined;
  }
}
