/**
 * `db-sync run`: the daemon. Restore, become ready, sync every interval, and on the first SIGTERM/SIGINT
 * take the final snapshot, upload it and write the backup key within the shutdown deadline.
 * Exit 0 only when that final sync succeeded.
 */
import { ExitCode, isAbort } from '../errors.js';
import { Sidecar } from '../core/sidecar.js';
import { startHealthServer, type HealthServer } from '../http/health-server.js';
import { CloudWatchEmf } from '../http/cloudwatch-emf.js';
import { SyncMetrics } from '../http/metrics.js';
import { statusDocument } from '../http/status.js';
import { retentionPolicy, uploadContext, type CommandContext } from './context.js';
import { sidecarLease } from './lease.js';
import { DbSyncError } from '../errors.js';

/** Start the sidecar's health server (when enabled) and register its closing. */
export async function startHealth(ctx: CommandContext, sidecar: Sidecar, metrics: SyncMetrics): Promise<HealthServer | undefined> {
  const { config, log } = ctx;
  if (config.healthPort === 0) return undefined;
  const startedAt = new Date();
  try {
    const server = await startHealthServer({
      host: config.healthHost,
      port: config.healthPort,
      log,
      scrub: ctx.scrub,
      source: {
        ready: () => sidecar.ready(),
        // Degraded stays 200: a task replaced for a failing S3 takes its unsynced changes with it.
        live: () => ({ ok: sidecar.phase !== 'failed', state: sidecar.ready() && sidecar.loop.degraded() ? 'degraded' : sidecar.phase }),
        status: () =>
          statusDocument({ sidecar: sidecar.status(), config, location: ctx.store.location, version: ctx.origin.toolVersion, startedAt }),
        extra: async (path) => (path === '/metrics' ? metrics.render() : undefined),
      },
    });
    ctx.shutdown.onClose('health server', () => server.close());
    return server;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new DbSyncError('Usage', `health server on ${config.healthHost}:${config.healthPort}: ${(error as Error).message}`, {
      hint:
        code === 'EADDRINUSE'
          ? 'the port is taken (another db-sync?); set DB_SYNC_HEALTH_PORT to a free port, or 0 to disable'
          : 'check DB_SYNC_HEALTH_HOST and DB_SYNC_HEALTH_PORT',
      cause: error,
    });
  }
}

/**
 * Prepare and start a sidecar: health server first (so ECS sees a live, not-ready process during a long
 * restore or while another task holds the lease), then the lease, then the restore, then the loop.
 * Returns undefined when a stop arrived before it was ready.
 */
export async function startSidecar(ctx: CommandContext): Promise<Sidecar | undefined> {
  // The gauges read the sidecar's status at scrape time; the sidecar feeds the counters as it runs.
  const metrics: SyncMetrics = new SyncMetrics(() => sidecar.status());
  const emf = cloudWatchMetrics(ctx, () => sidecar);
  const sidecar: Sidecar = new Sidecar({
    ...uploadContext(ctx),
    // Only the sidecar paces: its snapshots run next to the app. One-shot commands go as fast as they can.
    snapshotPace: ctx.config.snapshotPace,
    intervalMs: ctx.config.intervalMs,
    retention: retentionPolicy(ctx),
    onOutcome: (outcome) => {
      metrics.observeOutcome(outcome);
      emf?.observeOutcome(outcome);
    },
    onRun: (result) => {
      metrics.observeRun(result);
      emf?.observeRun(result);
    },
    // Taken in prepare(), before the restore; every upload is fenced by it; released after the final sync.
    lease: ctx.config.leaseMode === 'off' ? undefined : sidecarLease(ctx),
    restoreTimeoutMs: ctx.config.restoreTimeoutMs,
    versioningCheck: ctx.config.versioningCheck,
    onUnknownHistory: ctx.config.onUnknownHistory,
    continuous:
      ctx.config.continuous === 'off'
        ? undefined
        : {
            segmentIntervalMs: ctx.config.segmentIntervalMs,
            baseIntervalMs: ctx.config.baseIntervalMs,
            spoolMaxBytes: ctx.config.spoolMaxBytes,
          },
  });
  ctx.shutdown.onClose('sync loop', () => sidecar.close());
  await startHealth(ctx, sidecar, metrics);
  // From before the lease and the restore, so a task stuck waiting for the lease reports it.
  emf?.start();
  try {
    await sidecar.prepare(ctx.shutdown.graceful);
  } catch (error) {
    if (isAbort(error, ctx.shutdown.graceful)) {
      ctx.log.warn({ reason: ctx.shutdown.reason }, 'stopped before the database was ready; nothing uploaded');
      return undefined;
    }
    throw error;
  }
  sidecar.start();
  await sidecar.started();
  emf?.markReady();
  const replication = sidecar.status().replication;
  ctx.log.info(
    {
      intervalMs: ctx.config.intervalMs,
      key: ctx.config.key,
      location: ctx.store.location,
      continuous: replication ? replication.state !== 'waiting-for-wal' : false,
      generation: replication?.generation,
    },
    'ready; syncing',
  );
  return sidecar;
}

/**
 * CloudWatch EMF lines on stdout, when DB_SYNC_CLOUDWATCH_METRICS is on; undefined otherwise. The last
 * line is written when the command closes (after the final sync).
 */
function cloudWatchMetrics(ctx: CommandContext, sidecar: () => Sidecar): CloudWatchEmf | undefined {
  const { config } = ctx;
  if (!config.cloudwatchMetrics) return undefined;
  const emf = new CloudWatchEmf({
    namespace: config.cloudwatchNamespace,
    database: config.bucket ? `s3://${config.bucket}/${config.key}` : `${config.replicaDir ?? ''}/${config.key}`,
    write: ctx.print,
    source: () => sidecar().status(),
    restoreMs: () => sidecar().restoreMs,
  });
  ctx.shutdown.onClose('cloudwatch metrics', () => emf.stop());
  return emf;
}

/**
 * The final sync under the shutdown deadline.
 * @returns the exit code: Ok; BackupNotWritten when the final upload is in the store but the backup key
 * failed; Failure when the final sync failed; Aborted on a second signal.
 */
export async function finishSidecar(ctx: CommandContext, sidecar: Sidecar): Promise<number> {
  const deadline = ctx.config.shutdownTimeoutMs;
  ctx.log.info({ reason: ctx.shutdown.reason, deadlineMs: deadline }, 'stopping: final snapshot and upload');
  const signal = ctx.shutdown.drainSignal(deadline);
  try {
    const result = await sidecar.finish(signal);
    const uploaded = result.uploaded?.versionId ?? (result.uploaded ? true : false);
    if (result.backupError) {
      ctx.log.error({ uploaded, err: result.backupError.message, hint: result.backupError.hint }, result.backupError.message);
      return ExitCode.BackupNotWritten;
    }
    ctx.log.info({ uploaded, backup: result.backup?.key ?? result.backupExisting, note: result.note }, 'final sync complete');
    return ExitCode.Ok;
  } catch (error) {
    const hard = ctx.shutdown.hard.aborted;
    const why = hard
      ? 'aborted by a second signal'
      : signal.aborted
        ? `did not finish within ${deadline / 1000}s`
        : (error as Error).message;
    ctx.log.fatal(
      { err: (error as Error).message, hint: error instanceof DbSyncError ? error.hint : undefined },
      `FINAL SYNC FAILED (${why}): changes since the last upload are NOT in the store`,
    );
    return hard ? ExitCode.Aborted : ExitCode.Failure;
  }
}

export async function runCommand(ctx: CommandContext): Promise<number> {
  const sidecar = await startSidecar(ctx);
  if (!sidecar) return ExitCode.Ok;
  await ctx.shutdown.requested();
  return finishSidecar(ctx, sidecar);
}
