/**
 * `db-sync restore`: point-in-time and explicit restores, always verified.
 *   --at <ISO-8601>   newest version of KEY stored at or before that time
 *   --version-id <id> that version of KEY
 *   --backup <key>    a timestamped backup (or any key)
 *   --to <path>       where to write; default a new file beside DB_LOCAL_PATH, never the live database
 *                     unless --force (which keeps the replaced file as .backup)
 * Without a selector it restores the newest good copy, with fallback.
 */
import { stat } from 'node:fs/promises';
import { backupKey } from '../core/backup-key.js';
import { listCatalog, versionAt } from '../core/catalog.js';
import { ensureDatabaseDirectory } from '../core/leftovers.js';
import { recordRestore } from '../core/sync-state.js';
import { restoreExact, restoreNewestGood, type RestoreSource } from '../core/restore.js';
import { DbSyncError, ExitCode } from '../errors.js';
import { describeReplay, replayFields } from '../replication/replay.js';
import type { CommandContext } from './context.js';

/** Default target: `DB_LOCAL_PATH.restored.YYYYMMDD_HHMMSS`, a new file beside the live database. */
export function defaultRestoreTarget(localPath: string, now: Date): string {
  return backupKey(localPath, now).replace(/\.backup\./, '.restored.');
}

function parseAt(text: string): Date {
  const at = new Date(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(at.getTime())) {
    throw new DbSyncError('Usage', `--at "${text}" is not an ISO-8601 time`, { hint: 'e.g. --at 2026-11-23T10:00:00Z' });
  }
  return at;
}

export async function restoreCommand(ctx: CommandContext): Promise<number> {
  const { config, flags, store, log } = ctx;
  const selectors = [flags.at, flags.versionId, flags.backup].filter((v) => v !== undefined);
  if (selectors.length > 1) {
    throw new DbSyncError('Usage', 'give at most one of --at, --version-id and --backup', { hint: 'see `db-sync --help`' });
  }
  const target = flags.to ?? (flags.force ? config.localPath : defaultRestoreTarget(config.localPath, new Date()));
  if (!flags.force && (await stat(target).catch(() => null))) {
    throw new DbSyncError('Refused', `${target} already exists; not overwriting it`, {
      hint: 'choose a new path with --to, or pass --force to replace it (the current file is kept as .backup)',
    });
  }
  await ensureDatabaseDirectory(target, log);
  const signal = ctx.shutdown.graceful;
  let source: RestoreSource | undefined;
  let atMs: number | undefined;
  if (flags.at !== undefined) {
    const at = parseAt(flags.at);
    atMs = at.getTime();
    const chosen = versionAt(await listCatalog(store, config.key, { log, signal }), at);
    if (!chosen) {
      throw new DbSyncError('NotFound', `no version of ${config.key} is as old as ${at.toISOString()}`, {
        hint: 'list what exists with `db-sync backups`',
      });
    }
    log.info(
      { at: at.toISOString(), versionId: chosen.versionId, storedAt: chosen.at.toISOString() },
      'version chosen for the point in time',
    );
    source = { key: config.key, versionId: chosen.versionId };
  } else if (flags.versionId !== undefined) source = { key: config.key, versionId: flags.versionId };
  else if (flags.backup !== undefined) source = { key: flags.backup };

  const bar = ctx.progress?.('restore');
  const options = {
    check: config.integrityCheck,
    log,
    signal,
    keepPrevious: true,
    atMs,
    onProgress: bar ? (received: number, total: number) => bar.update(received, total) : undefined,
  };
  const restored = await (
    source ? restoreExact(store, source, target, options) : restoreNewestGood(store, config.key, target, options)
  ).finally(() => bar?.done());
  if (!restored) {
    throw new DbSyncError(
      'NotFound',
      `${source?.key ?? config.key}${source?.versionId ? `@${source.versionId}` : ''} does not exist in ${store.location}`,
      {
        hint: 'list what exists with `db-sync backups`',
      },
    );
  }
  if (target === config.localPath) {
    // The live database now holds this copy: record it, so the next start does not take it for unsynced
    // changes (or for a file of unknown history); a picked older copy is recorded as a rollback.
    await recordRestore(store, config.key, target, restored, { picked: source !== undefined, log, signal });
  }
  const result = {
    path: target,
    key: restored.info.key,
    versionId: restored.info.versionId,
    storedAt: restored.info.lastModified.toISOString(),
    sizeBytes: restored.sizeBytes,
    sha256: restored.sha256,
    checksumVerified: restored.checksumVerified,
    previousKeptAt: restored.previousKeptAt,
    chain: restored.chain && replayFields(restored.chain),
  };
  log.info(result, 'restored');
  ctx.print(
    flags.json
      ? JSON.stringify(result)
      : `restored ${result.key}${result.versionId ? `@${result.versionId}` : ''} (stored ${result.storedAt}, ${result.sizeBytes} bytes) to ${target}` +
          (result.previousKeptAt ? `; previous file kept at ${result.previousKeptAt}` : '') +
          (restored.chain ? `\n  chain: ${describeReplay(restored.chain)}` : ''),
  );
  return ExitCode.Ok;
}
