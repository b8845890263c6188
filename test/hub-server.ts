// A hub-compatible file server on 127.0.0.1 for the download tests: the routes and headers the
// Hugging Face hub answers `/{repo}/resolve/{revision}/{file}` with (X-Repo-Commit, ETag as the
// git blob sha1, for LFS files a redirect to a CDN on another origin carrying X-Linked-Etag
// (sha256) and X-Linked-Size, X-Error-Code on failures, Range -> 206), plus knobs for the
// failures under test (a gated repo, a body cut off after N bytes).
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ServedRepo {
  /** Files by path in the repository. */
  files: Map<string, Buffer>;
  commit: string;
  /** Branches / tags -> commit (main -> commit when absent). */
  refs?: Record<string, string>;
  /** Gated: requests need `Authorization: Bearer <token>`. */
  token?: string;
}

export interface Seen {
  url: string;
  range?: string;
  auth?: string;
  origin: 'hub' | 'cdn';
}

const lfs = (file: string) => file.endsWith('.safetensors') || file.endsWith('.bin');
export const gitSha1 = (data: Buffer) => createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

export class HubServer {
  readonly repos = new Map<string, ServedRepo>();
  readonly seen: Seen[] = [];
  /** Cut the next body of this file after so many bytes (once). */
  readonly breakAfter = new Map<string, number>();
  private hub!: Server;
  private cdn!: Server;
  url = '';
  private cdnUrl = '';
  private readonly blobs = new Map<string, Buffer>();

  async start(): Promise<this> {
    this.hub = createServer((req, res) => this.answerHub(req, res));
    this.cdn = createServer((req, res) => this.answerCdn(req, res));
    this.url = await listen(this.hub);
    this.cdnUrl = await listen(this.cdn);
    return this;
  }

  async stop(): Promise<void> {
    for (const s of [this.hub, this.cdn]) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  }

  private record(req: IncomingMessage, origin: Seen['origin']): void {
    this.seen.push({ url: req.url ?? '', range: req.headers.range, auth: req.headers.authorization, origin });
  }

  private answerHub(req: IncomingMessage, res: ServerResponse): void {
    this.record(req, 'hub');
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(req.url ?? '');
    const fail = (status: number, code: string, message: string) => {
      res.writeHead(status, { 'X-Error-Code': code, 'X-Error-Message': message, 'Content-Type': 'text/plain' }).end(message);
    };
    if (!m) return fail(404, 'EntryNotFound', 'no such route');
    const repo = this.repos.get(m[1]);
    if (!repo) return fail(404, 'RepoNotFound', 'Repository not found');
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      return fail(401, 'GatedRepo', 'Access to this model is restricted; you must be authenticated');
    }
    const revision = decodeURIComponent(m[2]);
    const commit = revision === repo.commit ? repo.commit : (repo.refs ?? { main: repo.commit })[revision];
    if (!commit) return fail(404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
    const file = m[3].split('/').map(decodeURIComponent).join('/');
    const data = repo.files.get(file);
    if (!data) return fail(404, 'EntryNotFound', `${file} does not exist`);
    const headers: Record<string, string> = { 'X-Repo-Commit': commit, ETag: `"${gitSha1(data)}"` };
    if (lfs(file)) {
      const oid = sha256(data);
      this.blobs.set(oid, data);
      res.writeHead(302, { ...headers, 'X-Linked-Etag': `"${oid}"`, 'X-Linked-Size': String(data.length), Location: `${this.cdnUrl}/blobs/${oid}?file=${encodeURIComponent(file)}` }).end();
      return;
    }
    this.body(req, res, data, file, headers);
  }

  private answerCdn(req: IncomingMessage, res: ServerResponse): void {
    this.record(req, 'cdn');
    const m = /^\/blobs\/([0-9a-f]{64})\?file=(.+)$/.exec(req.url ?? '');
    const data = m ? this.blobs.get(m[1]) : undefined;
    if (!m || !data) return void res.writeHead(404).end();
    this.body(req, res, data, decodeURIComponent(m[2]), { ETag: `"${m[1]}"` });
  }

  private body(req: IncomingMessage, res: ServerResponse, data: Buffer, file: string, headers: Record<string, string>): void {
    let start = 0;
    let end = data.length - 1;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
      if (start >= data.length) return void res.writeHead(416, { 'Content-Range': `bytes */${data.length}` }).end();
    }
    const part = data.subarray(start, end + 1);
    res.writeHead(range ? 206 : 200, {
      ...headers, 'Content-Length': String(part.length), 'Accept-Ranges': 'bytes',
      ...(range ? { 'Content-Range': `bytes ${start}-${end}/${data.length}` } : {}),
    });
    const cut = this.breakAfter.get(file);
    if (cut !== undefined && part.length > cut) {
      this.breakAfter.delete(file);
      res.write(part.subarray(0, cut), () => res.destroy()); // the connection drops mid-body
      return;
    }
    res.end(part);
  }
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}
