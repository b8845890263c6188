// Inputs must be regular files, checked before they are opened. open() on a FIFO blocks until a
// writer appears (synchronously it blocks the JS thread, so not even SIGTERM's handler runs), a
// character device such as /dev/zero never ends, and a directory fails with an uncoded EISDIR.
// stat() itself never blocks on any of them.
import { statSync, type Stats } from 'node:fs';
import { GainragError, ioError, type ErrorCode } from '../errors.js';

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Throws unless `file` (links followed) is a regular file: E_IO when it cannot be stat'ed
 * (missing, no permission), otherwise `code` (E_INVALID_ARG for a user's input, E_MODEL_CONFIG for
 * a file of a model directory) naming the path and what it is.
 */
export function checkRegularFile(file: string, code: ErrorCode = 'E_INVALID_ARG'): void {
  let st: Stats;
  try {
    st = statSync(file);
  } catch (err) {
    throw ioError(err, `cannot read ${file}`);
  }
  if (st.isFile()) return;
  throw new GainragError(code, `${file} is ${kindOf(st)}, not a regular file; inputs must be regular files`);
}
