/**
 * Where a chain lives in the store and how a base names its position (docs/continuous-replication.md, "S3 layout"):
 * - segments: `KEY.db-sync/<gen>/<seq:016x>-<lastCommitMs:013d>.seg`;
 * - a base (a version of `KEY`) carries `chain-gen`, `chain-seq` and `chain-checksum` in its user metadata.
 * Part of the documented S3 layout: never change a name or a digit count.
 */
import { randomBytes } from 'node:crypto';
import { META_CHAIN_CHECKSUM, META_CHAIN_GEN, META_CHAIN_SEQ } from '../core/metadata.js';
import type { ObjectMetadata } from '../replica/store.js';
import { formatChecksum, parseChecksum } from './checksum.js';

/** A generation id: UTC start time + 8 random hex digits, e.g. `20261202T174501Z-9f3a01bc`. */
const GEN_PATTERN = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-[0-9a-f]{8}$/;

/** Largest seq a key can carry and JavaScript can count exactly. */
export const MAX_SEQ = Number.MAX_SAFE_INTEGER;

/** A new generation id for a chain starting at `at`. */
export function newGenerationId(at: Date = new Date()): string {
  const stamp = at
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}Z$/, 'Z');
  return `${stamp}-${randomBytes(4).toString('hex')}`;
}

/** Whether `text` is a well-formed generation id. */
export function isGenerationId(text: string): boolean {
  return GEN_PATTERN.test(text);
}

/** The folder of every chain of `key`: `KEY.db-sync/`. */
export function chainsPrefix(key: string): string {
  return `${key}.db-sync/`;
}

/** The folder of one generation's segments: `KEY.db-sync/<gen>/`. */
export function generationPrefix(key: string, gen: string): string {
  return `${chainsPrefix(key)}${gen}/`;
}

/** One segment's identity as its key spells it. */
export interface SegmentName {
  readonly gen: string;
  readonly seq: number;
  /** Unix ms of the segment's last commit (for point-in-time restores without a HEAD per object). */
  readonly lastCommitMs: number;
}

/** `KEY.db-sync/<gen>/<seq:016x>-<lastCommitMs:013d>.seg` */
export function segmentKey(key: string, name: SegmentName): string {
  if (!isGenerationId(name.gen)) throw new RangeError(`not a generation id: ${JSON.stringify(name.gen)}`);
  if (!Number.isSafeInteger(name.seq) || name.seq < 1) throw new RangeError(`segment seq must be a positive integer, got ${name.seq}`);
  if (!Number.isSafeInteger(name.lastCommitMs) || name.lastCommitMs < 0 || name.lastCommitMs > 9_999_999_999_999) {
    throw new RangeError(`lastCommitMs out of range: ${name.lastCommitMs}`);
  }
  const seq = name.seq.toString(16).padStart(16, '0');
  const ms = name.lastCommitMs.toString().padStart(13, '0');
  return `${generationPrefix(key, name.gen)}${seq}-${ms}.seg`;
}

const SEGMENT_FILE = /^([0-9a-f]{16})-(\d{13})\.seg$/;

/**
 * Parse a segment key of `key`'s chains.
 * @returns undefined for any other key (including a malformed one: a listing may hold strays).
 */
export function parseSegmentKey(key: string, candidate: string): SegmentName | undefined {
  const prefix = chainsPrefix(key);
  if (!candidate.startsWith(prefix)) return undefined;
  const rest = candidate.slice(prefix.length);
  const slash = rest.indexOf('/');
  if (slash < 0) return undefined;
  const gen = rest.slice(0, slash);
  const match = SEGMENT_FILE.exec(rest.slice(slash + 1));
  if (!isGenerationId(gen) || !match) return undefined;
  const seq = Number.parseInt(match[1]!, 16);
  if (!Number.isSafeInteger(seq) || seq < 1) return undefined;
  return { gen, seq, lastCommitMs: Number.parseInt(match[2]!, 10) };
}

/** Where a base sits in its chain: it holds every commit of segments `1..seq` of `gen`. */
export interface ChainPosition {
  readonly gen: string;
  readonly seq: number;
  /** The database checksum at that position (pages 2..N). */
  readonly checksum: bigint;
}

/** The user metadata a base adds to the snapshot metadata. */
export function chainMetadata(position: ChainPosition): ObjectMetadata {
  return {
    [META_CHAIN_GEN]: position.gen,
    [META_CHAIN_SEQ]: position.seq.toString(10),
    [META_CHAIN_CHECKSUM]: formatChecksum(position.checksum),
  };
}

/** The result of reading a base's chain metadata. */
export type ChainMetadata =
  | { readonly kind: 'none' }
  | { readonly kind: 'chain'; readonly position: ChainPosition }
  | { readonly kind: 'malformed'; readonly reason: string };

/**
 * Read a `KEY` version's chain position. `none` when it carries no `chain-gen` (written by `db-sync upload`,
 * a rollback-journal database or another tool: restored alone); `malformed` when some chain field is
 * present but unusable (the caller restores the base alone and says why).
 */
export function parseChainMetadata(metadata: ObjectMetadata): ChainMetadata {
  const gen = metadata[META_CHAIN_GEN];
  const seqText = metadata[META_CHAIN_SEQ];
  const checksumText = metadata[META_CHAIN_CHECKSUM];
  if (gen === undefined && seqText === undefined && checksumText === undefined) return { kind: 'none' };
  if (gen === undefined || !isGenerationId(gen))
    return { kind: 'malformed', reason: `${META_CHAIN_GEN} ${JSON.stringify(gen)} is not a generation id` };
  const seq = seqText !== undefined && /^\d{1,16}$/.test(seqText) ? Number(seqText) : Number.NaN;
  if (!Number.isSafeInteger(seq)) return { kind: 'malformed', reason: `${META_CHAIN_SEQ} ${JSON.stringify(seqText)} is not a decimal seq` };
  const checksum = parseChecksum(checksumText);
  if (checksum === undefined)
    return { kind: 'malformed', reason: `${META_CHAIN_CHECKSUM} ${JSON.stringify(checksumText)} is not 16 hex digits` };
  return { kind: 'chain', position: { gen, seq, checksum } };
}
