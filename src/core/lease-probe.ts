/**
 * Does this store really enforce conditional writes, here? Providers differ (AWS S3 since late 2024;
 * Ceph RGW only in unversioned buckets; some ignore the headers and overwrite), so db-sync asks the exact
 * bucket and key prefix the lease will use, once at start, with a throwaway object:
 *
 * 1. create it with If-None-Match — must succeed;
 * 2. create it again — must fail;
 * 3. replace it with If-Match and a wrong etag — must fail;
 * 4. replace it with If-Match and its etag — must succeed (the S3 store learns here which ETag form the
 *    endpoint matches);
 * 5. delete it.
 *
 * On a versioned bucket the deleted probe leaves a few tiny noncurrent versions, which the bucket's
 * lifecycle rule expires.
 */
import { randomBytes } from 'node:crypto';
import { toError, wrapError } from '../errors.js';
import type { Logger } from '../logger.js';
import { isConditionalStore, PreconditionFailedError, type ReplicaStore } from '../replica/store.js';

export interface ProbeResult {
  /** Whether every check behaved as compare-and-swap requires. */
  readonly enforced: boolean;
  /** What did not behave, in words for the log and the error message. */
  readonly problems: readonly string[];
  /** The throwaway key used. */
  readonly probeKey: string | undefined;
}

/** The key of a probe object for the lease at `leaseKey`: same prefix, unique per run. */
export function probeKeyFor(leaseKey: string): string {
  return `${leaseKey}.probe.${randomBytes(6).toString('hex')}`;
}

/**
 * Probe conditional writes beside `leaseKey`.
 * @returns whether they are enforced, and what failed when not.
 * @throws storage errors that are not condition failures (no access, no bucket), wrapped "lease probe: …".
 */
export async function probeConditionalWrites(
  store: ReplicaStore,
  leaseKey: string,
  options: { log: Logger; signal?: AbortSignal | undefined },
): Promise<ProbeResult> {
  if (!isConditionalStore(store)) {
    return { enforced: false, problems: [`${store.location} offers no conditional writes`], probeKey: undefined };
  }
  const { signal, log } = options;
  const key = probeKeyFor(leaseKey);
  const body = (step: string): Uint8Array => Buffer.from(JSON.stringify({ probe: 'db-sync conditional writes', step }));
  /** Run a write that must fail its condition: true when it did. */
  const refused = async (write: () => Promise<unknown>): Promise<boolean> => {
    try {
      await write();
      return false;
    } catch (error) {
      if (error instanceof PreconditionFailedError) return true;
      throw error;
    }
  };
  const problems: string[] = [];
  let created = false;
  try {
    let etag: string;
    try {
      etag = await store.putBytes(key, body('create'), { ifNoneMatch: true }, { signal });
      created = true;
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
      return { enforced: false, problems: ['a create-only write (If-None-Match) of a new key was refused'], probeKey: key };
    }
    if (!(await refused(() => store.putBytes(key, body('create again'), { ifNoneMatch: true }, { signal })))) {
      problems.push('If-None-Match is ignored: a create-only write replaced an existing object');
      // Carry on with the etag of what is there now, to test If-Match as well.
      etag = (await store.getBytes(key, { signal }))?.etag ?? etag;
    }
    const wrong = etag === '0'.repeat(32) ? '1'.repeat(32) : '0'.repeat(32);
    if (!(await refused(() => store.putBytes(key, body('wrong etag'), { ifMatch: wrong }, { signal })))) {
      problems.push('If-Match is ignored: a write with a wrong etag replaced the object');
      etag = (await store.getBytes(key, { signal }))?.etag ?? etag;
    }
    if (await refused(() => store.putBytes(key, body('right etag'), { ifMatch: etag }, { signal }))) {
      problems.push('If-Match never matches: a write with the current etag was refused (on Ceph RGW: a versioned bucket)');
    }
    return { enforced: problems.length === 0, problems, probeKey: key };
  } catch (error) {
    throw wrapError('lease probe', error);
  } finally {
    if (created) {
      await store.delete(key, { signal }).catch((error: unknown) => {
        log.warn({ err: toError(error).message, key }, 'could not delete the lease probe object');
      });
    }
  }
}
