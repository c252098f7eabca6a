/** Content hashing with native crypto, streamed so memory stays flat whatever the file size. */
import { createHash } from 'node:crypto';
import { fileChunks } from '../file-chunks.js';
import type { Pacer } from './pacer.js';

/** sha256 of a file, as lowercase hex; with a `pacer`, paced chunk by chunk. */
export async function sha256File(path: string, signal?: AbortSignal, pacer?: Pacer): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fileChunks(path, { signal })) {
    hash.update(chunk);
    await pacer?.pause(signal);
  }
  return hash.digest('hex');
}
