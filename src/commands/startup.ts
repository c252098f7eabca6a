/**
 * `db-sync startup` and `db-sync shutdown`: the old script's two verbs, so an existing entrypoint can
 * switch by changing one word. `startup` prepares the database as `run` does before it is ready: restore
 * when there is none; with one on the volume, compare it with the remote copy and the sync history, and
 * keep it, replace it (kept as .backup) or refuse with a conflict (exit 5). `shutdown` uploads a final
 * snapshot, writes the backup key and records the sync.
 */
import { backupNotWritten, ExitCode } from '../errors.js';
import { recordedSha256 } from '../core/metadata.js';
import { withRetry } from '../core/retry.js';
import { Sidecar } from '../core/sidecar.js';
import { snapshotAndUpload, writeBackupKey } from '../core/upload.js';
import { retentionPolicy, uploadContext, type CommandContext } from './context.js';
import { pruneQuietly } from '../core/retention.js';
import { recordSync } from '../core/sync-state.js';

export async function startupCommand(ctx: CommandContext): Promise<number> {
  // Bounded by DB_SYNC_RESTORE_TIMEOUT as run's start is: without it, an unreachable S3 kept the legacy
  // entrypoint (and so the container's stop) waiting forever.
  const sidecar = new Sidecar({
    ...uploadContext(ctx),
    intervalMs: ctx.config.intervalMs,
    onUnknownHistory: ctx.config.onUnknownHistory,
    restoreTimeoutMs: ctx.config.restoreTimeoutMs,
  });
  try {
    const result = await sidecar.prepare(ctx.shutdown.graceful);
    ctx.print(
      ctx.flags.json
        ? JSON.stringify({ action: result.action, path: ctx.config.localPath, versionId: result.restored?.info.versionId })
        : `${result.action}: ${ctx.config.localPath}`,
    );
    return ExitCode.Ok;
  } finally {
    sidecar.close();
  }
}

export async function shutdownCommand(ctx: CommandContext): Promise<number> {
  const upload = uploadContext(ctx);
  const signal = ctx.shutdown.drainSignal(ctx.config.shutdownTimeoutMs);
  const remote = await withRetry(`head ${upload.key}`, () => ctx.store.head(upload.key, { signal }), { log: ctx.log, signal });
  const outcome = await snapshotAndUpload(upload, { signal, skipIfSha256: remote ? recordedSha256(remote.metadata) : undefined });
  const versionId = outcome.uploaded ? outcome.uploaded.versionId : remote?.versionId;
  // Uploaded, or found identical to KEY: either way both now hold this content.
  await recordSync(upload.dbPath, { key: upload.key, sha256: outcome.snapshot.sha256, versionId }, ctx.log);
  let backup;
  try {
    backup = await writeBackupKey(upload, versionId, new Date(), signal, outcome.snapshot.sha256);
  } catch (error) {
    throw backupNotWritten(error);
  }
  if (backup.written) await pruneQuietly(upload, retentionPolicy(ctx), signal);
  const backupKey = backup.written?.key ?? backup.existing;
  const result = {
    uploaded: outcome.uploaded !== undefined,
    versionId,
    backupKey,
    backupWritten: backup.written !== undefined,
    sha256: outcome.snapshot.sha256,
  };
  ctx.print(
    ctx.flags.json
      ? JSON.stringify(result)
      : `${result.uploaded ? 'uploaded' : 'unchanged, not re-uploaded'}; ${
          backup.written ? `backup written to ${backupKey}` : `no new backup: ${backupKey} already holds this content`
        }`,
  );
  return ExitCode.Ok;
}
