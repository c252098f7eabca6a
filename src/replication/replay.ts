/**
 * Replay a chain onto a restored base (docs/continuous-replication.md, "Restore", steps 2-3).
 *
 * Guarantees:
 * - the file ends as the base plus a gap-free prefix of the chain: segments are applied strictly in seq
 *   order, each one whole or not at all (every check of a segment comes before its first write);
 * - a missing seq, a broken segment (damaged, truncated, misnamed, two objects for one seq) or a checksum
 *   mismatch ends the replay there, reported in `stoppedBecause` and logged loudly; it is not an error;
 * - a storage failure (after retries) or a local write failure throws: the file is then in an unknown
 *   state and the caller discards it (restore works on a temp file).
 * Several segments download at once (bounded by count and bytes); they are applied in order.
 * The file is not fsynced here: the caller does (restore fsyncs the whole copy while it checks it).
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { withRetry, type RetryPolicy } from '../core/retry.js';
import { isAbort, StorageError } from '../errors.js';
import { removeQuietly, tempPathBeside } from '../fs-atomic.js';
import type { Logger } from '../logger.js';
import type { ObjectInfo, ReplicaStore } from '../replica/store.js';
import { formatChecksum, headerPageSize, pageHash, zeroPageHash } from './checksum.js';
import { generationPrefix, parseSegmentKey, type ChainPosition, type SegmentName } from './layout.js';
import { decodeSegment, readSegment, SegmentError, type PageImage, type SegmentHeader } from './segment.js';

/** Segments downloading at once. */
export const REPLAY_CONCURRENCY = 8;
/** Bytes of downloaded, not yet applied segments held in memory at most (one larger segment is always allowed). */
export const REPLAY_BUFFER_BYTES = 256 * 1024 * 1024;
/** A segment larger than this is downloaded to a temp file and read from there twice (check, then apply). */
export const SEGMENT_IN_MEMORY_MAX_BYTES = 64 * 1024 * 1024;

export interface ReplayOptions {
  readonly log: Logger;
  readonly signal?: AbortSignal | undefined;
  readonly policy?: RetryPolicy | undefined;
  /** Point in time: apply only segments whose last commit is at or before this (Unix ms). */
  readonly atMs?: number | undefined;
  /** Segments downloading at once (default {@link REPLAY_CONCURRENCY}). */
  readonly concurrency?: number | undefined;
  /** Larger segments go through a temp file (default {@link SEGMENT_IN_MEMORY_MAX_BYTES}). */
  readonly inMemoryMaxBytes?: number | undefined;
}

/** What a replay applied. */
export interface ReplayResult {
  readonly gen: string;
  /** The base's `chain-seq`: the replay started after it. */
  readonly fromSeq: number;
  /** The last seq applied (`fromSeq` when none was). */
  readonly lastSeq: number;
  /** Capture time of the last applied segment's last commit; undefined when none was applied. */
  readonly lastCommitAt: Date | undefined;
  readonly segments: number;
  readonly pages: number;
  /** Segments listed after the stop (or after the `atMs` cutoff) that were not applied. */
  readonly notApplied: number;
  /** Why the replay ended before the listed chain did; undefined when it applied everything it should. */
  readonly stoppedBecause?: string | undefined;
}

interface Listed extends SegmentName {
  readonly key: string;
  readonly sizeBytes: number;
}

/** A downloaded segment: in memory, or in a temp file when large. */
type Fetched =
  { readonly kind: 'bytes'; readonly bytes: Buffer } | { readonly kind: 'file'; readonly path: string } | { readonly kind: 'absent' };

/**
 * Apply the chain of `position` (segments of `key` after `position.seq`) onto the database file at `dbPath`.
 * `dbPath` must be the base exactly as downloaded and verified; its checksum is taken to be `position.checksum`.
 */
export async function replayChain(
  store: ReplicaStore,
  key: string,
  position: ChainPosition,
  dbPath: string,
  options: ReplayOptions,
): Promise<ReplayResult> {
  const { log } = options;
  const startedMs = Date.now();
  const prefix = generationPrefix(key, position.gen);
  const listing = await withRetry(`list ${prefix}`, () => store.list(prefix, { signal: options.signal }), options);
  const plan = planChain(key, position, listing, options.atMs);
  const handle = await open(dbPath, 'r+');
  const local = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, local.signal]) : local.signal;
  const inflight: Array<{ segment: Listed; fetched: Promise<Fetched> }> = [];
  let applied = 0;
  let pages = 0;
  let lastApplied: Listed | undefined;
  let stoppedBecause = plan.stoppedBecause;
  let stopIndex = plan.segments.length;
  const finish = (): ReplayResult => {
    const result: ReplayResult = {
      gen: position.gen,
      fromSeq: position.seq,
      lastSeq: lastApplied?.seq ?? position.seq,
      lastCommitAt: lastApplied ? new Date(lastApplied.lastCommitMs) : undefined,
      segments: applied,
      pages,
      notApplied: plan.segments.length - stopIndex + plan.beyond,
      stoppedBecause,
    };
    const fields = { ...result, lastCommitAt: result.lastCommitAt?.toISOString(), ms: Date.now() - startedMs };
    if (stoppedBecause !== undefined) {
      log.error(
        fields,
        `chain replay stopped at seq ${result.lastSeq + 1}: ${stoppedBecause}. Restored generation ${result.gen} through seq ${result.lastSeq}` +
          `${result.lastCommitAt ? ` (last commit ${result.lastCommitAt.toISOString()})` : ' (the base alone)'}; ` +
          `seq ${result.lastSeq + 1} and after (${result.notApplied} listed) were not applied`,
      );
    } else log.info(fields, 'chain replayed');
    return result;
  };
  try {
    const header = Buffer.alloc(100);
    await handle.read(header, 0, 100, 0);
    const pageSize = headerPageSize(header);
    if (pageSize === undefined) {
      // Not a SQLite file: the integrity check that follows rejects the base itself.
      stoppedBecause = 'the base has no valid SQLite page size';
      stopIndex = 0;
      return finish();
    }
    const state: FileState = {
      handle,
      pageSize,
      pageCount: Math.floor((await handle.stat()).size / pageSize),
      checksum: position.checksum,
      written: new Map(),
    };
    let next = 0;
    let bufferedBytes = 0;
    const concurrency = Math.max(1, options.concurrency ?? REPLAY_CONCURRENCY);
    const launch = (): void => {
      while (next < plan.segments.length && inflight.length < concurrency) {
        const segment = plan.segments[next]!;
        if (inflight.length > 0 && bufferedBytes + segment.sizeBytes > REPLAY_BUFFER_BYTES) break;
        bufferedBytes += segment.sizeBytes;
        const fetched = fetchSegment(store, segment, dbPath, { ...options, signal });
        fetched.catch(() => undefined); // awaited in order below; this keeps an early rejection from being "unhandled"
        inflight.push({ segment, fetched });
        next++;
      }
    };
    launch();
    for (let index = 0; index < plan.segments.length; index++) {
      const { segment, fetched } = inflight.shift()!;
      const got = await fetched;
      bufferedBytes -= segment.sizeBytes;
      launch();
      const outcome = await applySegment(state, segment, position.gen, got).finally(() => {
        if (got.kind === 'file') return removeQuietly(got.path);
        return undefined;
      });
      if (outcome.stop !== undefined) {
        stoppedBecause = outcome.stop;
        stopIndex = index;
        break;
      }
      applied++;
      pages += outcome.pages;
      lastApplied = segment;
    }
  } finally {
    local.abort();
    await Promise.all(
      inflight.map(async ({ fetched }) =>
        fetched.then((f) => (f.kind === 'file' ? removeQuietly(f.path) : undefined)).catch(() => undefined),
      ),
    );
    await handle.close();
  }
  return finish();
}

/** The segments to apply, in order, and why the listing itself ends the chain early (a gap, a duplicate). */
function planChain(
  key: string,
  position: ChainPosition,
  listing: readonly ObjectInfo[],
  atMs: number | undefined,
): { segments: Listed[]; beyond: number; stoppedBecause: string | undefined } {
  const bySeq = new Map<number, Listed[]>();
  for (const object of listing) {
    const name = parseSegmentKey(key, object.key);
    if (!name || name.gen !== position.gen || name.seq <= position.seq) continue;
    const same = bySeq.get(name.seq) ?? [];
    same.push({ ...name, key: object.key, sizeBytes: object.sizeBytes });
    bySeq.set(name.seq, same);
  }
  const seqs = [...bySeq.keys()].sort((a, b) => a - b);
  const segments: Listed[] = [];
  let stoppedBecause: string | undefined;
  let expected = position.seq + 1;
  let cutoff = false;
  for (const seq of seqs) {
    const same = bySeq.get(seq)!;
    if (seq !== expected) {
      stoppedBecause = `missing seq ${expected}`;
      break;
    }
    if (same.length > 1) {
      stoppedBecause = `broken segment ${seq}: ${same.length} objects claim seq ${seq} (${same.map((s) => s.key).join(', ')})`;
      break;
    }
    const segment = same[0]!;
    if (atMs !== undefined && segment.lastCommitMs > atMs) {
      cutoff = true;
      break;
    }
    segments.push(segment);
    expected++;
  }
  const beyond = seqs.filter((s) => s >= expected).length;
  return { segments, beyond, stoppedBecause: cutoff ? undefined : stoppedBecause };
}

/** A body stream that fails mid-way is a network failure: retryable, like a failed request. */
function bodyError(key: string, error: unknown): StorageError {
  const err = error as NodeJS.ErrnoException;
  return new StorageError(`read ${key}: ${err.message}`, { retryable: true, code: err.code ?? 'BodyStreamError', cause: error });
}

async function readAll(body: Readable, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of body) chunks.push(chunk as Buffer);
  } catch (error) {
    throw bodyError(key, error);
  }
  return Buffer.concat(chunks);
}

async function fetchSegment(store: ReplicaStore, segment: Listed, dbPath: string, options: ReplayOptions): Promise<Fetched> {
  return withRetry(
    `download ${segment.key}`,
    async (): Promise<Fetched> => {
      const got = await store.get(segment.key, { signal: options.signal });
      if (!got) return { kind: 'absent' };
      if (segment.sizeBytes <= (options.inMemoryMaxBytes ?? SEGMENT_IN_MEMORY_MAX_BYTES))
        return { kind: 'bytes', bytes: await readAll(got.body, segment.key) };
      const path = tempPathBeside(dbPath, 'segment');
      try {
        await pipeline(got.body, createWriteStream(path), { signal: options.signal });
      } catch (error) {
        await removeQuietly(path);
        if (isAbort(error, options.signal)) throw error;
        throw bodyError(segment.key, error);
      }
      return { kind: 'file', path };
    },
    options,
  );
}

interface FileState {
  readonly handle: FileHandle;
  readonly pageSize: number;
  pageCount: number;
  /** The running database checksum of the file. */
  checksum: bigint;
  /**
   * H(p) of pages this replay wrote, so a page changed again (hot pages change in most segments) is not
   * read back and hashed a second time.
   */
  readonly written: Map<number, bigint>;
}

/** Pages of a segment that passed every check, ready to write. */
interface Checked {
  readonly header: SegmentHeader;
  readonly postChecksum: bigint;
  /** H(p) of each new page image, to remember once written. */
  readonly newHashes: ReadonlyMap<number, bigint>;
  /** For in-memory segments; a file's pages are read again when applied. */
  readonly pages: readonly PageImage[] | undefined;
}

/** Check a segment completely, then apply it. Returns why the chain stops here, or the pages applied. */
async function applySegment(state: FileState, segment: Listed, gen: string, got: Fetched): Promise<{ stop?: string; pages: number }> {
  if (got.kind === 'absent') return { stop: `missing seq ${segment.seq} (listed, then gone)`, pages: 0 };
  const expected = { gen, seq: segment.seq, lastCommitMs: segment.lastCommitMs };
  const mismatch = (which: 'before' | 'after', have: bigint, want: bigint): string =>
    `checksum mismatch at ${segment.seq}: the database ${which} it is ${formatChecksum(have)}, the segment says ${formatChecksum(want)}`;
  let checked: Checked;
  try {
    if (got.kind === 'bytes') {
      const decoded = await decodeSegment(got.bytes, expected);
      if (decoded.header.preChecksum !== state.checksum)
        return { stop: mismatch('before', state.checksum, decoded.header.preChecksum), pages: 0 };
      checked = { header: decoded.header, pages: decoded.pages, ...(await postChecksum(state, decoded.header, decoded.pages)) };
    } else {
      const reader = await readSegment(createReadStream(got.path), expected);
      if (reader.header.preChecksum !== state.checksum) {
        await reader.pages.return();
        return { stop: mismatch('before', state.checksum, reader.header.preChecksum), pages: 0 };
      }
      checked = { header: reader.header, pages: undefined, ...(await postChecksum(state, reader.header, reader.pages)) };
    }
  } catch (error) {
    if (error instanceof SegmentError) return { stop: `broken segment ${segment.seq}: ${error.message}`, pages: 0 };
    throw error;
  }
  const { header } = checked;
  if (checked.postChecksum !== header.postChecksum) return { stop: mismatch('after', checked.postChecksum, header.postChecksum), pages: 0 };
  // Every check passed: write. From here on a failure is local (disk) and throws.
  // A file segment is read again for writing: it passed every check moments ago.
  const pages = checked.pages ?? (got.kind === 'file' ? (await readSegment(createReadStream(got.path), expected)).pages : []);
  let written = 0;
  for await (const page of pages) {
    await state.handle.write(page.data, 0, page.data.length, (page.pgno - 1) * state.pageSize);
    written++;
  }
  await state.handle.truncate(header.pageCount * state.pageSize);
  for (const p of state.written.keys()) if (p > header.pageCount) state.written.delete(p);
  for (const [p, hash] of checked.newHashes) state.written.set(p, hash);
  state.pageCount = header.pageCount;
  state.checksum = header.postChecksum;
  return { pages: written };
}

/**
 * The database checksum after applying `pages` under `header`, from the file's current (old) pages,
 * without writing anything, and the new pages' hashes. Also checks the segment's page size.
 */
async function postChecksum(
  state: FileState,
  header: SegmentHeader,
  pages: Iterable<PageImage> | AsyncIterable<PageImage>,
): Promise<{ postChecksum: bigint; newHashes: Map<number, bigint> }> {
  if (header.pageSize !== state.pageSize) {
    throw new SegmentError(`its page size ${header.pageSize} differs from the database's ${state.pageSize}`);
  }
  const old = Buffer.allocUnsafe(state.pageSize);
  const hashNow = async (pgno: number): Promise<bigint> => {
    if (pgno > state.pageCount) return zeroPageHash(pgno, state.pageSize);
    const known = state.written.get(pgno);
    if (known !== undefined) return known;
    const { bytesRead } = await state.handle.read(old, 0, state.pageSize, (pgno - 1) * state.pageSize);
    if (bytesRead !== state.pageSize) old.fill(0, bytesRead);
    return pageHash(pgno, old);
  };
  let sum = state.checksum;
  // The size change first: pages cut off leave the sum, pages added join it as zeros (the file's extension).
  for (let p = header.pageCount + 1; p <= state.pageCount; p++) if (p >= 2) sum ^= await hashNow(p);
  for (let p = state.pageCount + 1; p <= header.pageCount; p++) if (p >= 2) sum ^= zeroPageHash(p, state.pageSize);
  const newHashes = new Map<number, bigint>();
  for await (const page of pages) {
    const hash = pageHash(page.pgno, page.data);
    newHashes.set(page.pgno, hash);
    if (page.pgno >= 2) sum ^= (await hashNow(page.pgno)) ^ hash;
  }
  return { postChecksum: sum, newHashes };
}
/** One line for people: what a replay applied and, when it stopped early, why. */
export function describeReplay(r: ReplayResult): string {
  const applied =
    r.segments > 0
      ? `applied segments ${r.fromSeq + 1}..${r.lastSeq} of generation ${r.gen} (${r.pages} pages, last commit ${r.lastCommitAt?.toISOString() ?? '?'})`
      : `applied no segment of generation ${r.gen} after the base's seq ${r.fromSeq}`;
  return r.stoppedBecause === undefined
    ? applied
    : `${applied}; stopped at seq ${r.lastSeq + 1}: ${r.stoppedBecause} (${r.notApplied} later segment${r.notApplied === 1 ? '' : 's'} not applied)`;
}

/** The fields logs and `--json` output carry about a replay. */
export function replayFields(r: ReplayResult): Record<string, unknown> {
  return { ...r, lastCommitAt: r.lastCommitAt?.toISOString() };
}
