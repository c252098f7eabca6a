/** Reading a file, or a range of it, through one reused buffer. */
import { open } from 'node:fs/promises';
import { throwIfAborted } from './errors.js';

/**
 * Default buffer: 1 MiB. Larger than Node's 16-64 KiB stream defaults so a 1 GB file takes about a thousand
 * reads, not tens of thousands (measured: ~20% faster downloads when streams used this size).
 */
export const FILE_CHUNK_BYTES = 1024 * 1024;

export interface FileChunksOptions {
  readonly signal?: AbortSignal | undefined;
  /** Where to start reading (default 0). */
  readonly startBytes?: number;
  /** Where to stop (exclusive; default: the file's end, as found by each read). */
  readonly endBytes?: number;
  /** The buffer to read into (reused by the caller across calls), or the size of one to allocate. */
  readonly buffer?: Buffer;
  readonly bufferBytes?: number;
}

/**
 * A file's bytes from `startBytes` to `endBytes`, in order, read into one buffer that is reused: each
 * chunk is valid only until the next one is asked for, so consume it (hash it, copy what must outlive it)
 * first.
 *
 * Why not `createReadStream`: it allocates a fresh buffer per read, outside V8's heap, and V8 frees them
 * only once tens of MB have piled up (young-garbage.ts); hashing a 1 GB snapshot made 1,000 of them.
 * @throws AbortedError once `signal` fires (checked before each read).
 */
export async function* fileChunks(path: string, options: FileChunksOptions = {}): AsyncGenerator<Buffer, void, undefined> {
  const buffer = options.buffer ?? Buffer.allocUnsafe(options.bufferBytes ?? FILE_CHUNK_BYTES);
  const end = options.endBytes ?? Number.POSITIVE_INFINITY;
  const handle = await open(path, 'r');
  try {
    for (let position = options.startBytes ?? 0; position < end;) {
      throwIfAborted(options.signal, `read ${path}`);
      const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, end - position), position);
      if (bytesRead === 0) return;
      position += bytesRead;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}
