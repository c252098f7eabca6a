/**
 * `db-sync download`: fetch the newest good copy (or `--version-id`) into DB_LOCAL_PATH, verified.
 * Never replaces an existing local database without `--force`; with it, the old file is kept at
 * `DB_LOCAL_PATH.backup`.
 */
import { stat } from 'node:fs/promises';
import { DbSyncError, ExitCode } from '../errors.js';
import { ensureDatabaseDirectory } from '../core/leftovers.js';
import { recordRestore } from '../core/sync-state.js';
import { restoreExact, restoreNewestGood } from '../core/restore.js';
import { describeReplay, replayFields } from '../replication/replay.js';
import type { CommandContext } from './context.js';

export async function downloadCommand(ctx: CommandContext): Promise<number> {
  const { config, flags } = ctx;
  const target = config.localPath;
  if (!flags.force && (await stat(target).catch(() => null))) {
    throw new DbSyncError('Refused', `${target} already exists; not overwriting it`, {
      hint: 'pass --force to replace it (the current file is kept as DB_LOCAL_PATH.backup), or set DB_LOCAL_PATH to a new path',
    });
  }
  await ensureDatabaseDirectory(target, ctx.log);
  const bar = ctx.progress?.('download');
  const options = {
    check: config.integrityCheck,
    log: ctx.log,
    signal: ctx.shutdown.graceful,
    keepPrevious: true,
    onProgress: bar ? (received: number, total: number) => bar.update(received, total) : undefined,
  };
  const restored = await (
    flags.versionId
      ? restoreExact(ctx.store, { key: config.key, versionId: flags.versionId }, target, options)
      : restoreNewestGood(ctx.store, config.key, target, options)
  ).finally(() => bar?.done());
  if (!restored) {
    throw new DbSyncError(
      'NotFound',
      `${config.key}${flags.versionId ? ` version ${flags.versionId}` : ''} does not exist in ${ctx.store.location}`,
      {
        hint: flags.versionId
          ? 'list the versions with `db-sync backups`'
          : 'check DB_S3_BUCKET and DB_S3_KEY; nothing has been uploaded there yet',
      },
    );
  }
  // The database now holds this copy: record it, so the next start does not take it for unsynced changes
  // (or for a file of unknown history).
  await recordRestore(ctx.store, config.key, target, restored, {
    picked: flags.versionId !== undefined,
    log: ctx.log,
    signal: ctx.shutdown.graceful,
  });
  const result = {
    path: target,
    key: restored.info.key,
    versionId: restored.info.versionId,
    sizeBytes: restored.sizeBytes,
    sha256: restored.sha256,
    checksumVerified: restored.checksumVerified,
    previousKeptAt: restored.previousKeptAt,
    chain: restored.chain && replayFields(restored.chain),
  };
  ctx.log.info(result, 'database downloaded');
  ctx.print(
    flags.json
      ? JSON.stringify(result)
      : `downloaded ${result.key}${result.versionId ? `@${result.versionId}` : ''} (${result.sizeBytes} bytes) to ${target}` +
          (result.previousKeptAt ? `; previous file kept at ${result.previousKeptAt}` : '') +
          (restored.chain ? `\n  chain: ${describeReplay(restored.chain)}` : ''),
  );
  return ExitCode.Ok;
}
