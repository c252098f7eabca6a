/**
 * What a killed db-sync leaves behind, cleaned up at the next start so nothing accumulates:
 * - temp files beside the database (a snapshot, a download or a state file cut short by SIGKILL or a
 *   power loss); their names carry {@link TEMP_MARKER}, so nothing else is ever touched;
 * - incomplete multipart uploads in the store (S3 keeps, and bills, their parts until aborted).
 * It also makes sure the database's directory is there: a fresh volume may lack it, as `aws s3 cp` (the
 * script db-sync replaces) never minded.
 */
import { chown, mkdir, open, readdir, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { DbSyncError, isAbort, toError } from '../errors.js';
import { fsyncDir, removeQuietly, tempPathBeside, TEMP_MARKER } from '../fs-atomic.js';
import type { Logger } from '../logger.js';
import type { ReplicaStore } from '../replica/store.js';

/**
 * Make sure the directory of `dbPath` exists (created when missing), that db-sync can write in it, and
 * remove db-sync's temp files for this database in it. Never touches the database, its -wal/-shm, or any
 * file without the temp marker.
 * @returns the names of the files removed.
 * @throws DbSyncError `LocalDatabase` when the directory cannot be created, read or written.
 */
export async function prepareLocalDirectory(dbPath: string, log: Logger): Promise<string[]> {
  const dir = dirname(dbPath);
  const created = await ensureDatabaseDirectory(dbPath, log);
  await proveWritable(dbPath);
  if (created) return [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    throw localDirError(dir, error);
  }
  // Every temp file for this database starts with ".<name>": .db.sqlite3.db-sync-tmp-snapshot-…,
  // .db.sqlite3.db-sync.json.db-sync-tmp-write-…, .db.sqlite3.backup.db-sync-tmp-keep-… (fs-atomic.ts).
  const ours = names.filter((n) => n.startsWith(`.${basename(dbPath)}`) && n.includes(TEMP_MARKER));
  await Promise.all(ours.map((n) => removeQuietly(join(dir, n))));
  if (ours.length > 0) log.warn({ dir, files: ours }, 'removed temp files left by an earlier run that did not finish');
  return ours;
}

/**
 * Create, fsync and remove a file beside `dbPath`: every snapshot, restore and state file is written
 * there, so a directory db-sync cannot write must stop the start (never "ready" with every sync failing).
 * @throws DbSyncError `LocalDatabase` naming the directory, its owner and mode, db-sync's uid and the fix.
 */
export async function proveWritable(dbPath: string): Promise<void> {
  const dir = dirname(dbPath);
  const probe = tempPathBeside(dbPath, 'probe');
  try {
    const handle = await open(probe, 'wx', 0o600);
    try {
      await handle.write('db-sync write probe\n');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await removeQuietly(probe);
    await fsyncDir(dir);
  } catch (error) {
    await removeQuietly(probe);
    const owner = await stat(dir).catch(() => null);
    const me = userInfo();
    const ownerText = owner
      ? `owned by uid ${owner.uid} gid ${owner.gid}, mode ${(owner.mode & 0o7777).toString(8).padStart(4, '0')}`
      : 'of unknown owner';
    throw new DbSyncError(
      'LocalDatabase',
      `database directory ${dir} is not writable by db-sync (${toError(error).message}): it is ${ownerText}; db-sync runs as uid ${me.uid} gid ${me.gid}`,
      {
        hint:
          `db-sync writes snapshots, restores and its state file beside the database. Declare the directory as a VOLUME in the image ` +
          `(ECS copies the image's owner and mode into a volume only then), run db-sync as the directory's owner (\`user\` in the task ` +
          `definition or compose file), or give it the directory: chown ${me.uid}:${me.gid} ${dir}`,
        cause: error,
      },
    );
  }
}

/**
 * Create the directory of `dbPath` when it is missing, as `aws s3 cp` (the script db-sync replaces) does.
 * @returns whether it had to be created.
 * @throws DbSyncError `LocalDatabase` when it cannot be created (a file in the way, no permission).
 */
export async function ensureDatabaseDirectory(dbPath: string, log: Logger): Promise<boolean> {
  const dir = dirname(dbPath);
  const found = await stat(dir).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw localDirError(dir, error);
  });
  if (found?.isDirectory()) return false;
  if (found) throw localDirError(dir, Object.assign(new Error(`ENOTDIR: not a directory, ${dir}`), { code: 'ENOTDIR' }));
  try {
    await createDirectory(dir);
  } catch (error) {
    throw localDirError(dir, error);
  }
  log.info({ dir }, 'created the database directory (it did not exist)');
  return true;
}

/**
 * `mkdir -p`, each new level owned like the directory it was created in: a sidecar running as root on a
 * volume the app's user owns must not leave the app a directory it cannot write (best effort, as chown
 * works only as root).
 */
async function createDirectory(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode: 0o755 });
  if (first === undefined) return;
  const owner = await stat(dirname(first));
  for (let level = dir; level.length >= first.length; level = dirname(level)) {
    await chown(level, owner.uid, owner.gid).catch(() => undefined);
  }
}

function localDirError(dir: string, error: unknown): DbSyncError {
  const code = (error as NodeJS.ErrnoException).code;
  return new DbSyncError('LocalDatabase', `database directory ${dir}: ${toError(error).message}`, {
    hint:
      code === 'ENOTDIR'
        ? 'a part of DB_LOCAL_PATH is a file, not a directory; fix DB_LOCAL_PATH'
        : `db-sync needs to create and read files in ${dir} (snapshots are written beside the database); fix its permissions or DB_LOCAL_PATH`,
    cause: error,
  });
}

/**
 * Abort the store's incomplete uploads of `key` and its siblings (`KEY.conflict.…`) begun before now:
 * what a killed process left. Call it only when this process is the one writer (after the lease). Best
 * effort: a failure is logged, never thrown (the bucket's AbortIncompleteMultipartUpload lifecycle rule
 * is the backstop), except an abort through `signal`.
 */
export async function abortLeftoverUploads(store: ReplicaStore, key: string, log: Logger, signal: AbortSignal): Promise<string[]> {
  if (!store.abortStaleUploads) return [];
  try {
    const aborted = await store.abortStaleUploads(key, {
      initiatedBefore: new Date(),
      include: (k) => k === key || k.startsWith(`${key}.`),
      signal,
    });
    if (aborted.length > 0) log.warn({ keys: aborted }, 'aborted incomplete uploads left by an earlier run that did not finish');
    return aborted;
  } catch (error) {
    if (isAbort(error, signal)) throw error;
    log.warn(
      { err: toError(error).message },
      'could not look for incomplete uploads left by an earlier run; the bucket lifecycle rule (AbortIncompleteMultipartUpload) removes them',
    );
    return [];
  }
}
