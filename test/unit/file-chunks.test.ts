/** Reading a file through one reused buffer (src/file-chunks.ts; sha256File in src/core/hash.ts). */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256File } from '../../src/core/hash.js';
import { fileChunks } from '../../src/file-chunks.js';
import { AbortedError } from '../../src/errors.js';

let dir: string;
let path: string;
const content = randomBytes(2.5 * 64 * 1024);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'db-sync-chunks-'));
  path = join(dir, 'file.bin');
  await writeFile(path, content);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

async function collect(options: Parameters<typeof fileChunks>[1]): Promise<{ copies: Buffer[]; buffers: Set<ArrayBuffer> }> {
  const copies: Buffer[] = [];
  const buffers = new Set<ArrayBuffer>();
  for await (const chunk of fileChunks(path, options)) {
    copies.push(Buffer.from(chunk));
    buffers.add(chunk.buffer as ArrayBuffer);
  }
  return { copies, buffers };
}

describe('fileChunks', () => {
  it('yields the whole file in order, in chunks of the buffer size, all through one buffer', async () => {
    const { copies, buffers } = await collect({ bufferBytes: 64 * 1024 });
    expect(copies.map((c) => c.length)).toEqual([65536, 65536, 32768]);
    expect(Buffer.concat(copies).equals(content)).toBe(true);
    expect(buffers.size).toBe(1);
  });

  it('reads from startBytes to endBytes', async () => {
    const { copies } = await collect({ bufferBytes: 64 * 1024, endBytes: 100_000 });
    expect(Buffer.concat(copies).equals(content.subarray(0, 100_000))).toBe(true);
    const middle = await collect({ bufferBytes: 64 * 1024, startBytes: 70_000, endBytes: 150_001 });
    expect(Buffer.concat(middle.copies).equals(content.subarray(70_000, 150_001))).toBe(true);
  });

  it('reads into the buffer it is given', async () => {
    const buffer = Buffer.alloc(50_000);
    const { copies, buffers } = await collect({ buffer });
    expect(copies.map((c) => c.length)).toEqual([50_000, 50_000, 50_000, 13_840]);
    expect([...buffers]).toEqual([buffer.buffer]);
  });

  it('throws AbortedError once the signal fires, and reads nothing more', async () => {
    const controller = new AbortController();
    const seen: number[] = [];
    const reading = (async () => {
      for await (const chunk of fileChunks(path, { bufferBytes: 64 * 1024, signal: controller.signal })) {
        seen.push(chunk.length);
        controller.abort();
      }
    })();
    await expect(reading).rejects.toBeInstanceOf(AbortedError);
    expect(seen).toEqual([65536]);
  });
});

describe('sha256File', () => {
  it('is the sha256 of the whole file', async () => {
    expect(await sha256File(path)).toBe(createHash('sha256').update(content).digest('hex'));
  });
});
