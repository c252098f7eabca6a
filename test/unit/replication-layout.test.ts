import { describe, expect, it } from 'vitest';
import { formatChecksum, PageHashes, pageHash, parseChecksum, zeroPageHash } from '../../src/replication/checksum.js';
import {
  chainMetadata,
  generationPrefix,
  isGenerationId,
  newGenerationId,
  parseChainMetadata,
  parseSegmentKey,
  segmentKey,
} from '../../src/replication/layout.js';

describe('generation ids', () => {
  it('are the UTC start time plus 8 random hex digits', () => {
    const gen = newGenerationId(new Date('2026-12-02T17:45:01.234Z'));
    expect(gen).toMatch(/^20261202T174501Z-[0-9a-f]{8}$/);
    expect(isGenerationId(gen)).toBe(true);
    expect(newGenerationId()).not.toBe(newGenerationId());
  });
  it.each(['', '20261202T174501Z', '20261202T174501Z-9F3A01BC', '20261202T174501Z-9f3a01b', '../x', '20261202T174501Z-9f3a01bc/'])(
    'rejects %j',
    (text) => expect(isGenerationId(text)).toBe(false),
  );
});

describe('segment keys', () => {
  const gen = '20261202T174501Z-9f3a01bc';
  it('spell KEY.db-sync/<gen>/<seq:016x>-<lastCommitMs:013d>.seg and parse back', () => {
    const key = segmentKey('prod/app.db', { gen, seq: 255, lastCommitMs: 1_764_697_501_123 });
    expect(key).toBe('prod/app.db.db-sync/20261202T174501Z-9f3a01bc/00000000000000ff-1764697501123.seg');
    expect(key.startsWith(generationPrefix('prod/app.db', gen))).toBe(true);
    expect(parseSegmentKey('prod/app.db', key)).toEqual({ gen, seq: 255, lastCommitMs: 1_764_697_501_123 });
  });
  it('sort in seq order as strings', () => {
    const keys = [1, 2, 15, 16, 255, 4096].map((seq) => segmentKey('k', { gen, seq, lastCommitMs: 5 }));
    expect([...keys].sort()).toEqual(keys);
  });
  it.each([
    'k.db-sync/20261202T174501Z-9f3a01bc/00000000000000FF-1764697501123.seg',
    'k.db-sync/20261202T174501Z-9f3a01bc/0000000000000000-1764697501123.seg',
    'k.db-sync/20261202T174501Z-9f3a01bc/00000000000000ff-176469750112.seg',
    'k.db-sync/20261202T174501Z-9f3a01bc/00000000000000ff-1764697501123.seg.tmp',
    'k.db-sync/bad-gen/00000000000000ff-1764697501123.seg',
    'other.db-sync/20261202T174501Z-9f3a01bc/00000000000000ff-1764697501123.seg',
    'k.backup.20261202_174501',
  ])('ignores %s', (candidate) => expect(parseSegmentKey('k', candidate)).toBeUndefined());
  it('refuses to name what it could not parse back', () => {
    expect(() => segmentKey('k', { gen: 'x', seq: 1, lastCommitMs: 0 })).toThrow(RangeError);
    expect(() => segmentKey('k', { gen, seq: 0, lastCommitMs: 0 })).toThrow(RangeError);
    expect(() => segmentKey('k', { gen, seq: 1, lastCommitMs: 1e13 })).toThrow(RangeError);
  });
});

describe('chain metadata', () => {
  const position = { gen: '20261202T174501Z-9f3a01bc', seq: 42, checksum: 0xabcn };
  it('round-trips', () => {
    const meta = chainMetadata(position);
    expect(meta).toEqual({ 'chain-gen': position.gen, 'chain-seq': '42', 'chain-checksum': '0000000000000abc' });
    expect(parseChainMetadata({ sha256: 'x', ...meta })).toEqual({ kind: 'chain', position });
  });
  it('is absent on a plain snapshot', () => expect(parseChainMetadata({ sha256: 'x' })).toEqual({ kind: 'none' }));
  it.each([
    [{ 'chain-gen': 'nope', 'chain-seq': '1', 'chain-checksum': '0000000000000000' }, /chain-gen/],
    [{ 'chain-gen': '20261202T174501Z-9f3a01bc', 'chain-seq': '-1', 'chain-checksum': '0000000000000000' }, /chain-seq/],
    [{ 'chain-gen': '20261202T174501Z-9f3a01bc', 'chain-seq': '1', 'chain-checksum': 'abc' }, /chain-checksum/],
    [{ 'chain-seq': '1' }, /chain-gen/],
  ])('is malformed when a field is unusable: %j', (meta, reason) => {
    const parsed = parseChainMetadata(meta);
    expect(parsed.kind).toBe('malformed');
    expect(parsed.kind === 'malformed' && parsed.reason).toMatch(reason);
  });
});

describe('database checksum', () => {
  const page = (fill: number): Buffer => Buffer.alloc(1024, fill);
  it('H(p) depends on the page number and the bytes', () => {
    expect(pageHash(2, page(1))).not.toBe(pageHash(3, page(1)));
    expect(pageHash(2, page(1))).not.toBe(pageHash(2, page(2)));
    expect(formatChecksum(pageHash(2, page(1)))).toMatch(/^[0-9a-f]{16}$/);
    expect(parseChecksum(formatChecksum(0x1fn))).toBe(0x1fn);
    expect(parseChecksum('xyz')).toBeUndefined();
  });
  it('leaves page 1 out, updates incrementally, and XORs out pages a shrink cuts off', () => {
    const full = (pagesFill: number[]): bigint => pagesFill.slice(1).reduce((s, f, i) => s ^ pageHash(i + 2, page(f)), 0n);
    const hashes = new PageHashes(1024, BigUint64Array.from([1, 2, 3, 4].map((f, i) => pageHash(i + 1, page(f)))), 4);
    expect(hashes.checksum).toBe(full([1, 2, 3, 4]));
    hashes.setPage(1, page(9));
    expect(hashes.checksum).toBe(full([9, 2, 3, 4]));
    hashes.setPage(3, page(7));
    expect(hashes.checksum).toBe(full([9, 2, 7, 4]));
    hashes.resize(2);
    expect(hashes.checksum).toBe(full([9, 2]));
    hashes.resize(5);
    expect(hashes.checksum).toBe(full([9, 2]) ^ zeroPageHash(3, 1024) ^ zeroPageHash(4, 1024) ^ zeroPageHash(5, 1024));
    hashes.setPage(5, page(5));
    expect(hashes.checksum).toBe(full([9, 2]) ^ zeroPageHash(3, 1024) ^ zeroPageHash(4, 1024) ^ pageHash(5, page(5)));
  });
});
