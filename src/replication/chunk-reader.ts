/**
 * Exact reads from a chunked byte source (a network stream, a file stream, one buffer): the segment
 * decoder's input. Chunks are sliced, not copied, where a read falls inside one.
 */
import { Readable } from 'node:stream';

/** Pulls exact byte counts from a chunked source. */
export class ChunkReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private readonly iterator: AsyncIterator<Uint8Array>;

  constructor(source: Uint8Array | AsyncIterable<Uint8Array>) {
    this.iterator =
      source instanceof Uint8Array ? Readable.from([source], { objectMode: true })[Symbol.asyncIterator]() : source[Symbol.asyncIterator]();
  }

  /** Pull one more chunk; false at the end of the source. */
  private async pull(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.iterator.next();
    if (next.done === true) {
      this.ended = true;
      return false;
    }
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    return true;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const use = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, use);
      filled += use;
      if (use === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(use);
    }
    this.buffered -= n;
    return out;
  }

  /** Exactly `n` bytes, or undefined when the source ends first. */
  async read(n: number): Promise<Buffer | undefined> {
    while (this.buffered < n) if (!(await this.pull())) return undefined;
    return this.take(n);
  }

  /** Every remaining byte except the last `holdback`, as it arrives; then {@link rest} returns those. */
  async *allBut(holdback: number): AsyncGenerator<Buffer> {
    for (let more = true; more;) {
      more = await this.pull();
      if (this.buffered > holdback) yield this.take(this.buffered - holdback);
    }
  }

  /** What is left (call after the source ended). */
  rest(): Buffer {
    return this.take(this.buffered);
  }

  /** Stop reading the source early (on an error): lets a stream release its resources. */
  async close(): Promise<void> {
    await this.iterator.return?.();
  }
}
