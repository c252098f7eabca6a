/**
 * The single-writer lease: one small JSON object next to the database key, taken and renewed with
 * compare-and-swap writes, so that during a rolling deploy only one task uploads to the key at a time.
 *
 * - **Acquire**: create the object if absent (If-None-Match). While a live owner holds it, wait and poll.
 *   A released lease is taken over at once (If-Match on the etag read); a silent one after its TTL.
 * - **Expiry is judged on the waiter's own monotonic clock**: a lease is expired when its etag has not
 *   changed for the owner's TTL since the waiter first saw it. Comparing the owner's `expiresAt` with the
 *   waiter's wall clock would let clock skew hand the key to two writers; observing the etag cannot.
 *   The cost: a lease found long dead still costs one TTL of waiting.
 * - **Validity**: an owner counts the lease as valid until (time the last renew was *sent*) + TTL − a
 *   margin. A waiter first sees that write after it was sent, so it takes over only after the owner's
 *   validity has ended.
 * - **Fencing**: {@link Lease.assertHeld} renews before every write to the store; {@link FencedStore}
 *   applies it to every put, copy and delete, and aborts a write in flight when validity lapses. Once a
 *   renewal finds another owner the lease is lost for good: no further writes, and the owner of the
 *   {@link Lease} is told (the sidecar then reports itself unhealthy).
 * - **Release**: overwrite with a released record (If-Match), not a delete: Ceph RGW ignores If-Match on
 *   DeleteObject (measured), and a conditional overwrite works wherever the lease works at all.
 * - **Own writes**: S3 may apply a write whose answer is lost (a reset, a timeout); the next write, sent
 *   with the old etag, then fails its condition against this owner's own record. So after any failed
 *   condition (create, renew, release) the lease is read again: only this process writes records with its
 *   owner id, so finding one there means nobody else wrote since, and it is adopted, never "lost".
 *
 * No AWS types here: the store is a {@link ConditionalStore}.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError, DbSyncError, StorageError, toError } from '../errors.js';
import type { Logger } from '../logger.js';
import {
  PreconditionFailedError,
  type ConditionalStore,
  type DownloadOptions,
  type Downloaded,
  type GetResult,
  type ObjectInfo,
  type PutFromPreviousOptions,
  type PutFromPreviousResult,
  type PutOptions,
  type ReadOptions,
  type ReplicaStore,
} from '../replica/store.js';
import type { Origin } from './metadata.js';

/** Longest pause between polls while another owner holds the lease. */
export const LEASE_POLL_MAX_MS = 5_000;
/** While waiting, repeat the "waiting for the lease" log line at most this often (and when the holder changes). */
const WAIT_LOG_EVERY_MS = 30_000;

/** Who takes the lease: the snapshot origin, plus the process and ECS task when known. */
export interface LeaseHolderInfo extends Origin {
  readonly pid?: number | undefined;
  /** ECS task (or container) id, when running on ECS. */
  readonly task?: string | undefined;
}

/** The lease object's content (JSON). Times are ISO 8601 by the writer's clock: for humans, not for expiry. */
export interface LeaseRecord {
  /** Random id of this owner, new for every process. */
  readonly owner: string;
  readonly host: string;
  readonly pid?: number | undefined;
  readonly task?: string | undefined;
  readonly acquiredAt: string;
  readonly renewedAt: string;
  readonly expiresAt: string;
  /** The owner's TTL: a waiter takes over after seeing no renewal for this long. */
  readonly ttlMs: number;
  /**
   * Writes by this owner so far. Makes every write's bytes (and so its etag) unique: waiters read an
   * unchanged etag as "the owner is silent", so two renewals must never produce the same one.
   */
  readonly seq: number;
  readonly toolVersion: string;
  /** Set on release: the next owner may take over at once. */
  readonly released?: boolean | undefined;
}

export type LeaseState = 'idle' | 'waiting' | 'held' | 'lapsed' | 'lost' | 'released';

export interface LeaseStatus {
  readonly state: LeaseState;
  readonly key: string;
  readonly location: string;
  readonly owner: string;
  /** The current holder as last read (ours while held; another owner's while waiting or after a loss). */
  readonly holder: LeaseRecord | undefined;
  readonly ttlMs: number;
}

/** The lease was taken by another owner: uploading now would overwrite its data. */
export class LeaseLostError extends DbSyncError {
  constructor(message: string, hint?: string) {
    super('Refused', message, {
      hint:
        hint ??
        'another db-sync took the lease (this one was paused, partitioned or too slow to renew); stop this task, the new owner has the database',
    });
    this.name = 'LeaseLostError';
  }
}

/** The lease is not currently confirmed (renewals failing): wait and try again; retrying may help. */
export class LeaseLapsedError extends StorageError {
  constructor(message: string, cause?: unknown) {
    super(message, {
      retryable: true,
      code: 'LeaseLapsed',
      kind: 'Failure',
      cause,
      hint: 'renewing the lease failed; db-sync keeps trying and uploads once it holds the lease again',
    });
    this.name = 'LeaseLapsedError';
  }
}

/** The task (or container) id in an ECS metadata URI (`http://169.254.170.2/v4/<id>`), without an HTTP call. */
export function ecsTaskFromMetadataUri(uri: string | undefined): string | undefined {
  if (!uri) return undefined;
  try {
    const last = new URL(uri).pathname.split('/').filter(Boolean).pop();
    return last && last !== 'v4' ? last : undefined;
  } catch {
    return undefined;
  }
}

/** Parse a lease object; undefined when it is not one (a human's file, a torn write from another tool). */
export function parseLeaseRecord(bytes: Uint8Array): LeaseRecord | undefined {
  try {
    const value = JSON.parse(Buffer.from(bytes).toString('utf8')) as Partial<LeaseRecord>;
    if (typeof value.owner !== 'string' || typeof value.expiresAt !== 'string' || typeof value.host !== 'string') return undefined;
    return value as LeaseRecord;
  } catch {
    return undefined;
  }
}

export interface LeaseOptions {
  readonly store: ConditionalStore;
  readonly key: string;
  /** Where the lease lives, for logs (e.g. `s3://bucket`). */
  readonly location: string;
  readonly ttlMs: number;
  readonly holder: LeaseHolderInfo;
  readonly log: Logger;
  /** Renew this often; default a third of the TTL. */
  readonly renewEveryMs?: number | undefined;
  /** Poll this often while waiting; default a third of the TTL, at most {@link LEASE_POLL_MAX_MS}. */
  readonly pollMs?: number | undefined;
  /** Monotonic clock in ms (tests drive it); default `performance.now`. */
  readonly now?: (() => number) | undefined;
  /** Wall clock for the record's times; default `Date.now`. */
  readonly wallNow?: (() => number) | undefined;
}

export type AcquireAttempt =
  | {
      readonly acquired: true;
      readonly previous: LeaseRecord | undefined;
      /** `own`: the object held this owner's record already (an earlier write landed, its answer lost). */
      readonly how: 'created' | 'released' | 'expired' | 'unreadable' | 'own';
    }
  | { readonly acquired: false; readonly holder: LeaseRecord | undefined; readonly retryInMs: number };

export class Lease {
  readonly owner = randomBytes(8).toString('hex');
  private stateValue: LeaseState = 'idle';
  private etag: string | undefined;
  private record: LeaseRecord | undefined;
  private acquiredAt: string | undefined;
  private seq = 0;
  /** Monotonic time until which the lease is ours without asking again. */
  private validUntil = Number.NEGATIVE_INFINITY;
  /** The other owner's etag as first seen, and when (monotonic): the expiry clock. */
  private observed: { etag: string; sinceMs: number } | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private lapseTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  /** Fences of writes in flight: aborted when validity lapses or the lease is lost. */
  private readonly fences = new Set<AbortController>();
  private readonly lostListeners = new Set<(error: LeaseLostError) => void>();
  private readonly now: () => number;
  private readonly wallNow: () => number;
  private readonly renewEveryMs: number;
  private readonly pollMs: number;
  private readonly marginMs: number;

  constructor(private readonly options: LeaseOptions) {
    this.now = options.now ?? (() => performance.now());
    this.wallNow = options.wallNow ?? (() => Date.now());
    this.renewEveryMs = options.renewEveryMs ?? Math.max(1, Math.floor(options.ttlMs / 3));
    this.pollMs = options.pollMs ?? Math.max(1, Math.min(LEASE_POLL_MAX_MS, Math.floor(options.ttlMs / 3)));
    // Covers clock-rate drift between hosts and the time a write takes to reach the store.
    this.marginMs = Math.floor(options.ttlMs / 10);
  }

  get state(): LeaseState {
    return this.stateValue;
  }

  /** Be told once when the lease is lost to another owner. Returns a function that unsubscribes. */
  onLost(listener: (error: LeaseLostError) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  private newRecord(released = false): LeaseRecord {
    const wall = this.wallNow();
    const { host, pid, task, toolVersion } = this.options.holder;
    this.acquiredAt ??= new Date(wall).toISOString();
    return {
      owner: this.owner,
      host,
      pid,
      task,
      acquiredAt: this.acquiredAt,
      renewedAt: new Date(wall).toISOString(),
      expiresAt: new Date(released ? wall : wall + this.options.ttlMs).toISOString(),
      ttlMs: this.options.ttlMs,
      seq: ++this.seq,
      toolVersion,
      released: released || undefined,
    };
  }

  private encode(record: LeaseRecord): Uint8Array {
    return Buffer.from(`${JSON.stringify(record)}\n`);
  }

  /** Mark a successful write sent at `sentAt`: the lease is ours until then + TTL − margin. */
  private confirm(etag: string, record: LeaseRecord, sentAt: number): void {
    if (this.stateValue === 'lapsed') this.options.log.info({ key: this.options.key }, 'lease confirmed again; uploads resume');
    this.etag = etag;
    this.record = record;
    this.stateValue = 'held';
    this.validUntil = sentAt + this.options.ttlMs - this.marginMs;
    clearTimeout(this.lapseTimer);
    this.lapseTimer = setTimeout(() => this.lapse(), Math.max(0, this.validUntil - this.now()));
  }

  private lapse(): void {
    if (this.stateValue !== 'held' || this.now() < this.validUntil) return;
    this.stateValue = 'lapsed';
    this.options.log.error(
      { key: this.options.key, location: this.options.location },
      'lease not confirmed within its TTL (renewals failing); uploads paused until a renewal succeeds',
    );
    this.abortFences(new LeaseLapsedError(`lease ${this.options.key}: not confirmed within its TTL`));
  }

  private abortFences(reason: Error): void {
    for (const fence of this.fences) fence.abort(reason);
    this.fences.clear();
  }

  /**
   * One attempt to take the lease: create it, or take over a released, unreadable or expired one.
   * @throws storage errors other than a lost race (a lost race is reported as not acquired).
   */
  async tryAcquire(signal?: AbortSignal): Promise<AcquireAttempt> {
    const { store, key } = this.options;
    const current = await store.getBytes(key, { signal });
    const sentAt = this.now();
    if (!current) {
      const record = this.newRecord();
      try {
        this.confirm(await store.putBytes(key, this.encode(record), { ifNoneMatch: true }, { signal }), record, sentAt);
        return { acquired: true, previous: undefined, how: 'created' };
      } catch (error) {
        if (!(error instanceof PreconditionFailedError)) throw error;
        if (await this.adoptIfLanded(record, sentAt, signal)) return { acquired: true, previous: undefined, how: 'created' };
        return { acquired: false, holder: undefined, retryInMs: 0 };
      }
    }
    const holder = parseLeaseRecord(current.bytes);
    let how: 'released' | 'expired' | 'unreadable' | 'own' | undefined;
    if (!holder) how = 'unreadable';
    else if (holder.released) how = 'released';
    // An earlier attempt of ours was written but its answer lost: nobody else has written since.
    else if (holder.owner === this.owner) how = 'own';
    else {
      if (this.observed?.etag !== current.etag) this.observed = { etag: current.etag, sinceMs: sentAt };
      const ttl = Number.isFinite(holder.ttlMs) && holder.ttlMs > 0 ? holder.ttlMs : this.options.ttlMs;
      const silentFor = sentAt - this.observed.sinceMs;
      if (silentFor >= ttl) how = 'expired';
      else return { acquired: false, holder, retryInMs: Math.min(this.pollMs, ttl - silentFor) };
    }
    const record = this.newRecord();
    try {
      this.confirm(await store.putBytes(key, this.encode(record), { ifMatch: current.etag }, { signal }), record, sentAt);
      return { acquired: true, previous: holder, how };
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
      if (await this.adoptIfLanded(record, sentAt, signal)) return { acquired: true, previous: holder, how };
      // Another waiter took it first; the next attempt sees the new owner.
      return { acquired: false, holder, retryInMs: 0 };
    }
  }

  /**
   * Read the lease after a write of ours failed its condition.
   * @returns the current object and its record; `own` when that record is this owner's (and not released).
   */
  private async readAfterConflict(
    signal: AbortSignal | undefined,
  ): Promise<{ etag: string; record: LeaseRecord | undefined; own: boolean } | undefined> {
    const current = await this.options.store.getBytes(this.options.key, { signal }).catch(() => undefined);
    if (!current) return undefined;
    const record = parseLeaseRecord(current.bytes);
    return { etag: current.etag, record, own: record?.owner === this.owner && record.released !== true };
  }

  /**
   * After a failed condition on `sent` (sent at `sentAt`): when the object holds exactly that record, the
   * write landed and only its answer was lost (or a retry of it met it): adopt its etag as confirmed.
   */
  private async adoptIfLanded(sent: LeaseRecord, sentAt: number, signal: AbortSignal | undefined): Promise<boolean> {
    const found = await this.readAfterConflict(signal);
    if (!found?.own || found.record?.seq !== sent.seq) return false;
    this.options.log.warn({ key: this.options.key, seq: sent.seq }, 'lease write landed though its answer was lost; adopting it');
    this.confirm(found.etag, sent, sentAt);
    return true;
  }

  /**
   * Take the lease, waiting as long as a live owner holds it, and start renewing it.
   * @param onWait called on every poll that finds another owner (the sidecar reports it as not ready).
   * @throws AbortedError when `signal` fires; storage errors that retrying cannot fix.
   */
  async acquire(signal: AbortSignal, onWait?: (holder: LeaseRecord | undefined) => void): Promise<void> {
    const { key, location, log } = this.options;
    let lastLog: { owner: string | undefined; atMs: number } | undefined;
    for (let failures = 0; ;) {
      if (signal.aborted) throw new AbortedError('acquire lease: aborted', signal.reason);
      let attempt: AcquireAttempt;
      try {
        attempt = await this.tryAcquire(signal);
        failures = 0;
      } catch (error) {
        if (signal.aborted) throw new AbortedError('acquire lease: aborted', error);
        if (!(error instanceof StorageError && error.retryable)) throw error;
        failures += 1;
        const delayMs = Math.min(LEASE_POLL_MAX_MS * 6, 1_000 * 2 ** Math.min(failures, 5));
        log.error({ err: error.message, key, retryInMs: delayMs }, 'cannot read the lease; not ready, retrying');
        await sleep(delayMs, undefined, { signal }).catch(() => undefined);
        continue;
      }
      if (attempt.acquired) {
        this.observed = undefined;
        const previous = attempt.previous;
        log.info(
          {
            key,
            location,
            owner: this.owner,
            ttlMs: this.options.ttlMs,
            how: attempt.how,
            previousOwner: previous
              ? { owner: previous.owner, host: previous.host, task: previous.task, renewedAt: previous.renewedAt }
              : undefined,
          },
          attempt.how === 'expired' ? 'lease taken over from an owner that stopped renewing' : 'lease acquired',
        );
        this.startRenewing();
        return;
      }
      this.stateValue = 'waiting';
      this.record = attempt.holder;
      onWait?.(attempt.holder);
      const h = attempt.holder;
      const nowMs = this.now();
      if (h && (lastLog?.owner !== h.owner || nowMs - lastLog.atMs >= WAIT_LOG_EVERY_MS)) {
        lastLog = { owner: h.owner, atMs: nowMs };
        log.warn(
          {
            key,
            location,
            holder: { owner: h.owner, host: h.host, pid: h.pid, task: h.task },
            expiresAt: h.expiresAt,
            renewedAt: h.renewedAt,
          },
          'another db-sync holds the lease; waiting (not ready) until it releases it or stops renewing',
        );
      }
      if (attempt.retryInMs > 0) await sleep(attempt.retryInMs, undefined, { signal }).catch(() => undefined);
    }
  }

  /** Renew every {@link LeaseOptions.renewEveryMs} until stopped, released or lost. Idempotent. */
  startRenewing(): void {
    if (this.renewTimer) return;
    const tick = (): void => {
      this.renewTimer = setTimeout(() => {
        void this.renewShared()
          .catch((error: unknown) => {
            if (!(error instanceof LeaseLostError)) {
              this.options.log.warn({ err: toError(error).message, key: this.options.key }, 'lease renewal failed; retrying');
            }
          })
          .finally(() => {
            if (this.renewTimer && (this.stateValue === 'held' || this.stateValue === 'lapsed')) tick();
          });
      }, this.renewEveryMs);
    };
    tick();
  }

  /** One renewal at a time: callers share the one in flight. */
  private renewShared(signal?: AbortSignal): Promise<void> {
    this.renewing ??= this.renew(signal).finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  /**
   * Rewrite the lease with a new expiry, on the condition that it is still the version we wrote.
   * @throws LeaseLostError when another owner wrote it; the storage error otherwise (the lease then
   * stays ours until its validity ends, and lapses after).
   */
  async renew(signal?: AbortSignal, adopted = false): Promise<void> {
    if (this.stateValue === 'lost') throw this.lostError();
    if (this.etag === undefined || (this.stateValue !== 'held' && this.stateValue !== 'lapsed')) {
      throw new LeaseLostError(`lease ${this.options.key}: not held (${this.stateValue})`, 'acquire the lease first');
    }
    const { store, key, log } = this.options;
    const record = this.newRecord();
    const sentAt = this.now();
    try {
      this.confirm(await store.putBytes(key, this.encode(record), { ifMatch: this.etag }, { signal }), record, sentAt);
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) {
        if (this.now() >= this.validUntil) this.lapse();
        throw error;
      }
      // A 409 from a concurrent request can fail a write whose condition held: look before declaring it lost.
      const found = await this.readAfterConflict(signal);
      if (found?.etag === this.etag) throw new LeaseLapsedError(`renew lease ${key}: conflict, will retry`, error);
      if (found?.own && found.record?.seq === record.seq) {
        log.warn({ key, seq: record.seq }, 'lease renewal landed though its answer was lost; adopting it');
        this.confirm(found.etag, record, sentAt);
        return;
      }
      if (found?.own && !adopted) {
        // An earlier renewal of ours landed unanswered, so this one carried a stale etag: renew from it.
        log.warn({ key, seq: found.record?.seq }, 'an earlier lease renewal landed though its answer was lost; renewing from it');
        this.etag = found.etag;
        return this.renew(signal, true);
      }
      this.markLost(found?.record);
      throw this.lostError();
    }
  }

  private lostError(): LeaseLostError {
    const h = this.record;
    const by = h && h.owner !== this.owner ? ` by ${h.host}${h.task ? ` (task ${h.task})` : ''}, owner ${h.owner}` : '';
    return new LeaseLostError(`lease ${this.options.key} in ${this.options.location} was taken over${by}; not uploading`);
  }

  private markLost(holder: LeaseRecord | undefined): void {
    if (this.stateValue === 'lost') return;
    this.stateValue = 'lost';
    this.record = holder;
    this.validUntil = Number.NEGATIVE_INFINITY;
    this.stop();
    const error = this.lostError();
    this.abortFences(error);
    for (const listener of [...this.lostListeners]) listener(error);
  }

  /**
   * The fencing check before a write to the store: confirm the lease with a renewal.
   * @throws LeaseLostError when another owner holds it; LeaseLapsedError (retryable) when it cannot be
   * confirmed right now and its validity has run out. A failed renewal within validity is tolerated:
   * nobody can have taken over yet.
   */
  async assertHeld(signal?: AbortSignal): Promise<void> {
    try {
      await this.renewShared(signal);
    } catch (error) {
      if (error instanceof LeaseLostError) throw error;
      if (this.now() >= this.validUntil) {
        throw error instanceof LeaseLapsedError ? error : new LeaseLapsedError(`lease ${this.options.key}: cannot confirm it`, error);
      }
    }
    // Checked again after the await: a process paused (SIGSTOP) mid-renewal resumes past its validity.
    if (this.stateValue === 'lost') throw this.lostError();
    if (this.now() >= this.validUntil) throw new LeaseLapsedError(`lease ${this.options.key}: validity ended before the write started`);
  }

  /**
   * Check, without a request, that the lease is held and its monotonic validity deadline has not passed:
   * the fence of writes too frequent to renew before each (continuous replication's segments). The
   * renewal timer keeps the deadline moving; a write after it passed must wait for a renewal.
   * @throws LeaseLostError when lost, LeaseLapsedError when not (or no longer) confirmed.
   */
  assertLocallyValid(): void {
    if (this.stateValue === 'lost') throw this.lostError();
    if (this.stateValue !== 'held' || this.now() >= this.validUntil) {
      throw new LeaseLapsedError(`lease ${this.options.key}: not confirmed within its TTL`);
    }
  }

  /**
   * A signal that fires when the lease lapses or is lost: pass it to a write so that it is abandoned
   * before it can complete without the lease. Call the returned `done` when the write is over.
   */
  fence(): { signal: AbortSignal; done: () => void } {
    const controller = new AbortController();
    if (this.stateValue !== 'held' || this.now() >= this.validUntil) {
      controller.abort(this.stateValue === 'lost' ? this.lostError() : new LeaseLapsedError(`lease ${this.options.key}: not confirmed`));
    } else {
      this.fences.add(controller);
    }
    return { signal: controller.signal, done: () => this.fences.delete(controller) };
  }

  /**
   * Give the lease up (after the final upload): overwrite it with a released record, so a waiting
   * successor takes over at once instead of after the TTL. Never throws: a failed release only makes
   * the successor wait for the TTL.
   */
  async release(signal?: AbortSignal): Promise<void> {
    const { store, key, log } = this.options;
    const state = this.stateValue;
    this.stop();
    if ((state !== 'held' && state !== 'lapsed') || this.etag === undefined) return;
    await this.renewing?.catch(() => undefined);
    if (this.stateValue !== 'held' && this.stateValue !== 'lapsed') return;
    const released = (etag: string, record: LeaseRecord): void => {
      this.etag = etag;
      this.record = record;
      this.stateValue = 'released';
      this.abortFences(new LeaseLostError(`lease ${key}: released`));
      log.info({ key, location: this.options.location, owner: this.owner }, 'lease released');
    };
    for (let attempt = 1; ; attempt += 1) {
      const record = this.newRecord(true);
      try {
        released(await store.putBytes(key, this.encode(record), { ifMatch: this.etag }, { signal }), record);
        return;
      } catch (error) {
        if (!(error instanceof PreconditionFailedError)) {
          log.warn({ err: toError(error).message, key }, 'could not release the lease; a successor will take it over after the TTL');
          return;
        }
        const current = await store.getBytes(key, { signal }).catch(() => undefined);
        const found = current ? parseLeaseRecord(current.bytes) : undefined;
        if (current && found?.owner === this.owner) {
          // Our own write is there: this release landed unanswered, or an earlier renewal did.
          if (found.released === true) return released(current.etag, found);
          if (attempt === 1) {
            this.etag = current.etag;
            continue;
          }
        }
        this.markLost(found);
        log.error({ key }, 'lease was already taken over when releasing it');
        return;
      }
    }
  }

  /** Stop renewing (no request). Idempotent. */
  stop(): void {
    clearTimeout(this.renewTimer);
    clearTimeout(this.lapseTimer);
    this.renewTimer = undefined;
    this.lapseTimer = undefined;
  }

  status(): LeaseStatus {
    return {
      state: this.stateValue,
      key: this.options.key,
      location: this.options.location,
      owner: this.owner,
      holder: this.record,
      ttlMs: this.options.ttlMs,
    };
  }
}

/**
 * A {@link ReplicaStore} whose writes (put, copy, delete) each first confirm the lease and are abandoned
 * when it lapses or is lost mid-write. Reads pass through. With no lease (`lease()` returns undefined:
 * lease off, or the store cannot enforce it) every call passes through.
 */
export class FencedStore implements ReplicaStore {
  constructor(
    private readonly inner: ReplicaStore,
    private readonly lease: () => Lease | undefined,
  ) {}

  get location(): string {
    return this.inner.location;
  }

  head(key: string, options?: ReadOptions): Promise<ObjectInfo | null> {
    return this.inner.head(key, options);
  }

  get(key: string, options?: ReadOptions): Promise<GetResult | null> {
    return this.inner.get(key, options);
  }

  list(prefix: string, options?: { signal?: AbortSignal | undefined }): Promise<ObjectInfo[]> {
    return this.inner.list(prefix, options);
  }

  listVersions(key: string, options?: { signal?: AbortSignal | undefined }): Promise<ObjectInfo[]> {
    return this.inner.listVersions(key, options);
  }

  put(key: string, sourcePath: string, options: PutOptions): Promise<ObjectInfo> {
    return this.fenced(options.signal, (signal) => this.inner.put(key, sourcePath, { ...options, signal }));
  }

  putFromPrevious(key: string, sourcePath: string, options: PutFromPreviousOptions): Promise<PutFromPreviousResult> {
    return this.fenced(options.signal, (signal) => this.inner.putFromPrevious(key, sourcePath, { ...options, signal }));
  }

  download(key: string, path: string, options?: DownloadOptions): Promise<Downloaded | null> {
    return this.inner.download(key, path, options);
  }

  copy(
    sourceKey: string,
    sourceVersionId: string | undefined,
    destinationKey: string,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<ObjectInfo> {
    return this.fenced(options.signal, (signal) => this.inner.copy(sourceKey, sourceVersionId, destinationKey, { signal }));
  }

  delete(key: string, options: { signal?: AbortSignal | undefined } = {}): Promise<void> {
    return this.fenced(options.signal, (signal) => this.inner.delete(key, { signal }));
  }

  /**
   * A put fenced by the lease's *local* validity (no renewal request): for segments, one a second, where a
   * request per object would double the cost. A write is still abandoned when validity lapses mid-way.
   * Bases, backups and deletes use the renewing fence ({@link put}).
   */
  putLocallyFenced(key: string, sourcePath: string, options: PutOptions): Promise<ObjectInfo> {
    const lease = this.lease();
    if (!lease) return this.inner.put(key, sourcePath, options);
    return this.withFence(
      lease,
      options.signal,
      (signal) => this.inner.put(key, sourcePath, { ...options, signal }),
      () => {
        lease.assertLocallyValid();
        return Promise.resolve();
      },
    );
  }

  private async fenced<T>(callerSignal: AbortSignal | undefined, write: (signal: AbortSignal | undefined) => Promise<T>): Promise<T> {
    const lease = this.lease();
    if (!lease) return write(callerSignal);
    return this.withFence(lease, callerSignal, write, () => lease.assertHeld(callerSignal));
  }

  private async withFence<T>(
    lease: Lease,
    callerSignal: AbortSignal | undefined,
    write: (signal: AbortSignal | undefined) => Promise<T>,
    check: () => Promise<void>,
  ): Promise<T> {
    await check();
    const fence = lease.fence();
    try {
      return await write(callerSignal ? AbortSignal.any([callerSignal, fence.signal]) : fence.signal);
    } catch (error) {
      // The fence fired, not the caller: report why, so the loop does not log a bare "aborted".
      if (fence.signal.aborted && callerSignal?.aborted !== true) throw toError(fence.signal.reason);
      throw error;
    } finally {
      fence.done();
    }
  }

  close(): void {
    this.inner.close();
  }
}
