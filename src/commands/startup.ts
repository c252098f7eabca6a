/**
 * `db-sync startup` and `db-sync shutdown`: the old script's two verbs, with the same meaning, so an
 * existing entrypoint can switch by changing one word. `startup` restores when there is no local
 * database (and keeps one that exists); `shutdown` uploads a final snapshot and writes the backup key.
 */
import { backupNotWritten, ExitCode } from '../errors.js';
import { recordedSha256 } from '../core/metadata.js';
import { withRetry } from '../core/retry.js';
import { Sidecar } from '../core/sidecar.js';
import { snapshotAndUpload, writeBackupKey } from '../core/upload.js';
import { retentionPolicy, uploadContext, type CommandContext } from './context.js';
import { pruneQuietly } from '../core/retention.js';

export async function startupCommand(ctx: CommandContext): Promise<number> {
  // Bounded by DB_SYNC_RESTORE_TIMEOUT as run's start is: without it, an unreachable S3 kept the legacy
  // entrypoint (and so the container's stop) waiting forever.
  const sidecar = new Sidecar({ ...uploadContext(ctx), intervalMs: ctx.config.intervalMs, restoreTimeoutMs: ctx.config.restoreTimeoutMs });
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
