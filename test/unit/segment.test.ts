import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import {
  decodeSegment,
  encodeSegment,
  encodeSegmentToBuffer,
  FIXED_HEADER_BYTES,
  readSegment,
  SegmentError,
  type PageImage,
  type SegmentHeader,
} from '../../src/replication/segment.js';

const GEN = '20261202T174501Z-9f3a01bc';
const dir = mkdtempSync(join(tmpdir(), 'segment-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function header(overrides: Partial<SegmentHeader> = {}): SegmentHeader {
  return {
    gen: GEN,
    seq: 7,
    pageSize: 4096,
    pageCount: 40,
    entries: 3,
    commits: 2,
    firstCommitMs: 1_764_697_501_000,
    lastCommitMs: 1_764_697_501_900,
    preChecksum: 0x0123456789abcdefn,
    postChecksum: 0xfedcba9876543210n,
    walSalt1: 0xdeadbeef,
    walSalt2: 17,
    walFirstFrame: 1,
    walLastFrame: 9,
    compressed: false,
    ...overrides,
  };
}

/** Pages with recognisable, partly compressible content. */
function pages(pgnos: number[], pageSize = 4096): PageImage[] {
  return pgnos.map((pgno) => {
    const data = Buffer.alloc(pageSize, pgno & 0xff);
    randomBytes(64).copy(data, 100);
    return { pgno, data };
  });
}

async function collect(
  source: Uint8Array | AsyncIterable<Uint8Array>,
  expected = { gen: GEN, seq: 7 },
): Promise<{ header: SegmentHeader; pages: PageImage[] }> {
  const reader = await readSegment(source, expected);
  const out: PageImage[] = [];
  for await (const page of reader.pages) out.push({ pgno: page.pgno, data: Buffer.from(page.data) });
  return { header: reader.header, pages: out };
}

/** Feed bytes in small odd-sized chunks, as a network stream would. */
function chunked(bytes: Buffer, size = 1000): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) parts.push(bytes.subarray(i, i + size));
  return Readable.from(parts);
}

describe('segment round trip', () => {
  it.each([false, true])('writes and reads back every header field and page (compressed: %s)', async (compressed) => {
    const h = header({ compressed, entries: 3 });
    const input = pages([1, 5, 40]);
    const bytes = await encodeSegmentToBuffer(h, input);
    const decoded = await decodeSegment(bytes, { gen: GEN, seq: 7, lastCommitMs: h.lastCommitMs });
    expect(decoded.header).toEqual(h);
    expect(decoded.pages.map((p) => p.pgno)).toEqual([1, 5, 40]);
    decoded.pages.forEach((p, i) => expect(Buffer.compare(p.data, input[i]!.data)).toBe(0));
    const streamed = await collect(chunked(bytes, 777));
    expect(streamed.header).toEqual(h);
    expect(streamed.pages.map((p) => p.data)).toEqual(input.map((p) => p.data));
  });

  it('compression shrinks compressible pages', async () => {
    const input = pages([2, 3, 4, 5]);
    const plain = await encodeSegmentToBuffer(header({ entries: 4 }), input);
    const packed = await encodeSegmentToBuffer(header({ entries: 4, compressed: true }), input);
    expect(packed.length).toBeLessThan(plain.length / 4);
  });

  it('streams to a file path (atomic) and to a Writable, from an async iterable', async () => {
    async function* many(): AsyncGenerator<PageImage> {
      for (let p = 1; p <= 600; p++) yield { pgno: p, data: Buffer.alloc(4096, p % 251) };
    }
    const h = header({ entries: 600, pageCount: 600, compressed: true });
    const path = join(dir, 'one.seg');
    const written = await encodeSegment(h, many(), path);
    expect(readdirSync(dir)).toEqual(['one.seg']);
    const bytes = readFileSync(path);
    expect(written.sizeBytes).toBe(bytes.length);
    expect(written.sha256).toBe(bytes.subarray(bytes.length - 32).toString('hex'));
    const sink = new PassThrough();
    const parts: Buffer[] = [];
    sink.on('data', (c: Buffer) => parts.push(c));
    await encodeSegment(h, many(), sink);
    expect(Buffer.concat(parts).equals(bytes)).toBe(true);
    const decoded = await decodeSegment(bytes, { gen: GEN, seq: 7 });
    expect(decoded.pages).toHaveLength(600);
    expect(decoded.pages[599]!.data[0]).toBe(600 % 251);
  });

  it('handles the largest page size and an empty body', async () => {
    const big = header({ pageSize: 65536, entries: 1 });
    expect((await decodeSegment(await encodeSegmentToBuffer(big, pages([3], 65536)), { gen: GEN, seq: 7 })).pages).toHaveLength(1);
    const none = header({ entries: 0 });
    expect((await decodeSegment(await encodeSegmentToBuffer(none, []), { gen: GEN, seq: 7 })).pages).toEqual([]);
  });
});

describe('the encoder refuses what it must never write', () => {
  it.each([
    ['out of order', [5, 3], 2],
    ['duplicate page', [3, 3], 2],
    ['page beyond pageCount', [41], 1],
    ['page 0', [0], 1],
    ['fewer pages than declared', [1, 2], 3],
    ['more pages than declared', [1, 2, 3, 4], 3],
  ])('%s', async (_name, pgnos, entries) => {
    await expect(encodeSegmentToBuffer(header({ entries }), pages(pgnos))).rejects.toThrow(RangeError);
  });

  it('a page of the wrong size, and a bad header', async () => {
    await expect(encodeSegmentToBuffer(header({ entries: 1 }), pages([1], 1024))).rejects.toThrow(/1024 bytes, not 4096/);
    await expect(encodeSegmentToBuffer(header({ gen: 'nope' }), [])).rejects.toThrow(/generation/);
    await expect(encodeSegmentToBuffer(header({ pageSize: 3000 }), [])).rejects.toThrow(/page size/);
    await expect(encodeSegmentToBuffer(header({ commits: 0 }), [])).rejects.toThrow(/commits/);
    await expect(encodeSegmentToBuffer(header({ firstCommitMs: 5, lastCommitMs: 4 }), [])).rejects.toThrow(/commit times/);
  });

  it('leaves no file behind when the pages fail half way', async () => {
    const path = join(dir, 'bad.seg');
    await expect(encodeSegment(header({ entries: 3 }), pages([1, 9, 2]), path)).rejects.toThrow(RangeError);
    expect(readdirSync(dir).filter((f) => f.includes('bad'))).toEqual([]);
  });
});

describe('the decoder rejects damaged or misnamed input', () => {
  const h = header({ entries: 3 });
  const good = (compressed = false): Promise<Buffer> => encodeSegmentToBuffer({ ...h, compressed }, pages([1, 5, 40]));

  async function rejects(bytes: Buffer, pattern: RegExp, expected = { gen: GEN, seq: 7 }): Promise<void> {
    await expect(decodeSegment(bytes, expected)).rejects.toThrow(pattern);
    await expect(decodeSegment(bytes, expected)).rejects.toBeInstanceOf(SegmentError);
    // The streaming reader must refuse it too, whether it fails at the header or only at the end.
    await expect(collect(chunked(bytes, 333), expected)).rejects.toBeInstanceOf(SegmentError);
  }

  it.each([false, true])('truncated anywhere (compressed: %s)', async (compressed) => {
    const bytes = await good(compressed);
    for (const cut of [0, 10, FIXED_HEADER_BYTES + 3, Math.floor(bytes.length / 2), bytes.length - 33, bytes.length - 1]) {
      await rejects(bytes.subarray(0, cut), /truncated|sha256|decompress/);
    }
  });

  it.each([false, true])('a flipped bit anywhere (compressed: %s)', async (compressed) => {
    const bytes = await good(compressed);
    for (let i = 0; i < 40; i++) {
      const at = Math.floor(Math.random() * bytes.length);
      const flipped = Buffer.from(bytes);
      flipped[at]! ^= 1 << Math.floor(Math.random() * 8);
      await rejects(flipped, /segment 7 of/);
    }
  });

  it('bytes appended after the trailer', async () => {
    await rejects(Buffer.concat([await good(), Buffer.from('x')]), /sha256/);
  });

  it('a segment of another generation, or another seq, than its key says', async () => {
    const bytes = await good();
    await rejects(bytes, /generation 20261202T174501Z-9f3a01bc/, { gen: '20261202T180000Z-00000000', seq: 7 });
    await rejects(bytes, /header says seq 7 \(the key says 8\)/, { gen: GEN, seq: 8 });
    await expect(decodeSegment(bytes, { gen: GEN, seq: 7, lastCommitMs: 1 })).rejects.toThrow(/last commit time/);
  });

  it('out-of-order and out-of-bounds entries, even with a valid sha256', async () => {
    // Forge segments whose sha256 is right but whose body breaks the rules: a buggy writer, not damage.
    const forge = async (pgnos: number[]): Promise<Buffer> => {
      const bytes = await encodeSegmentToBuffer({ ...h, entries: pgnos.length }, pages(pgnos.map((_, i) => i + 1)));
      const start = FIXED_HEADER_BYTES + GEN.length;
      pgnos.forEach((p, i) => bytes.writeUInt32BE(p, start + i * 4100));
      const { createHash } = await import('node:crypto');
      createHash('sha256')
        .update(bytes.subarray(0, bytes.length - 32))
        .digest()
        .copy(bytes, bytes.length - 32);
      return bytes;
    };
    await rejects(await forge([5, 3]), /page 3 after page 5/);
    await rejects(await forge([2, 2]), /page 2 after page 2/);
    await rejects(await forge([41]), /page 41 after page 0 \(pages must ascend within 1\.\.40\)/);
    await rejects(await forge([0]), /page 0 after page 0/);
  });

  it('not a segment, or a future format version', async () => {
    await rejects(Buffer.from('SQLite format 3\0'.padEnd(200, '\0')), /sha256|bad magic/);
    const bytes = await good();
    bytes.writeUInt16BE(2, 8);
    await expect(collect(bytes)).rejects.toThrow(/format version 2/);
  });
});
