/**
 * Is the store versioned? db-sync overwrites one key, and only the bucket's versioning keeps the older
 * snapshots: the fallback to an older copy when the newest fails verification, `restore --at`,
 * `restore --version-id` and `backups` all read them. On an unversioned bucket every upload replaces the
 * only copy, so `run`/`exec` check once at start and say so, or refuse to start when told to.
 */
import type { VersioningCheck } from '../config.js';
import { DbSyncError, StorageError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ReplicaStore, VersioningState } from '../replica/store.js';

/** What the check found: the store's answer, or `unknown` when it could not be read (and the check only warns). */
export type VersioningStatus = VersioningState | 'unknown';

/**
 * Read the store's versioning and report it: a warning naming the bucket when it is not `enabled`.
 * With `mode` `required`, a store that is not versioned is refused.
 * @returns the state (`unknown` when the store cannot say, e.g. no s3:GetBucketVersioning, in `warn` mode).
 * @throws DbSyncError (Usage, exit 2) when `required` and the store is not versioned; storage errors that
 * retrying may fix (the caller retries them as for the restore); in `required` mode, every storage error.
 */
export async function checkVersioning(
  store: ReplicaStore,
  mode: VersioningCheck,
  options: { log: Logger; signal?: AbortSignal | undefined },
): Promise<VersioningStatus | undefined> {
  const { log, signal } = options;
  if (mode === 'off') return undefined;
  if (!store.versioning) return 'unknown';
  let state: VersioningState;
  try {
    state = await store.versioning({ signal });
  } catch (error) {
    if (mode === 'required' || !(error instanceof StorageError) || error.retryable) throw error;
    log.warn(
      { location: store.location, err: error.message },
      'cannot read the bucket versioning; not checked (grant s3:GetBucketVersioning, or set DB_SYNC_VERSIONING_CHECK=off)',
    );
    return 'unknown';
  }
  if (state === 'enabled') {
    log.debug({ location: store.location }, 'bucket versioning is enabled');
    return state;
  }
  const what = `versioning of ${store.location} is ${state === 'suspended' ? 'suspended' : 'not enabled'}`;
  const hint =
    'turn versioning on (aws s3api put-bucket-versioning --bucket BUCKET --versioning-configuration Status=Enabled; ' +
    'terraform/modules/bucket does), or set DB_SYNC_VERSIONING_CHECK=warn to run anyway';
  if (mode === 'required') throw new DbSyncError('Usage', `${what}: every upload would replace the only copy`, { hint });
  log.warn(
    { location: store.location, versioning: state },
    `${what}: every upload replaces the only copy; no fallback to an older copy, no restore --at, no history in backups`,
  );
  return state;
}
