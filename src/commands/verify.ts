/**
 * `db-sync verify`: the restore drill. Download the latest snapshot to a temp file, check its size,
 * sha256 and SQLite integrity (full integrity_check unless configured otherwise), print what was checked,
 * remove the copy. Exit 0 when it would restore, 6 when it would not, 4 when there is nothing.
 * Run it from cron or CI so a broken backup is found before it is needed.
 */
import { stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { downloadVerified, removeSqliteSidecars } from '../core/restore.js';
import { DbSyncError, ExitCode } from '../errors.js';
import { removeQuietly } from '../fs-atomic.js';
import { describeReplay, replayFields } from '../replication/replay.js';
import type { CommandContext } from './context.js';

export async function verifyCommand(ctx: CommandContext): Promise<number> {
  const { config, store, log } = ctx;
  // The drill checks thoroughly unless told otherwise: it is not on anyone's start-up path.
  const check = config.integrityCheck === 'quick' ? 'full' : config.integrityCheck;
  // Only a temp file beside this path is written (and removed); the path itself is never created. Beside
  // DB_LOCAL_PATH: a task with readonlyRootFilesystem has no writable /tmp, but its database volume is
  // writable and has room for a copy (every snapshot needs it). The system temp directory only when
  // DB_LOCAL_PATH's directory does not exist (verify run on a machine without the volume).
  const besideDatabase = await stat(dirname(config.localPath)).then(
    (s) => s.isDirectory(),
    () => false,
  );
  const scratch = besideDatabase ? `${config.localPath}.verify` : join(tmpdir(), 'db-sync-verify.sqlite3');
  const copy = await downloadVerified(store, { key: config.key, versionId: ctx.flags.versionId }, scratch, {
    check,
    log,
    signal: ctx.shutdown.graceful,
  });
  if (!copy) {
    throw new DbSyncError('NotFound', `${config.key} does not exist in ${store.location}; nothing to verify`, {
      hint: 'check DB_S3_BUCKET and DB_S3_KEY',
    });
  }
  await removeQuietly(copy.path);
  await removeSqliteSidecars(copy.path);
  const result = {
    ok: true,
    key: config.key,
    versionId: copy.info.versionId,
    storedAt: copy.info.lastModified.toISOString(),
    sizeBytes: copy.sizeBytes,
    sha256: copy.sha256,
    checksum: copy.checksumVerified ? 'matches metadata' : 'no sha256 in metadata (not written by db-sync)',
    integrityCheck: check === 'full' ? 'PRAGMA integrity_check: ok' : 'opened as SQLite (DB_SYNC_INTEGRITY_CHECK=none)',
    chain: copy.chain && replayFields(copy.chain),
  };
  log.info(result, 'verified');
  if (ctx.flags.json) ctx.print(JSON.stringify(result));
  else {
    ctx.print(`verified ${result.key}${result.versionId ? `@${result.versionId}` : ''} stored ${result.storedAt}`);
    ctx.print(`  size:      ${result.sizeBytes} bytes`);
    ctx.print(`  sha256:    ${result.sha256} (${result.checksum})`);
    ctx.print(`  integrity: ${result.integrityCheck}`);
    if (copy.chain) ctx.print(`  chain:     ${describeReplay(copy.chain)}`);
  }
  return ExitCode.Ok;
}
