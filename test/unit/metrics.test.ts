import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { UploadOutcome } from '../../src/core/upload.js';
import { DbSyncError, StorageError } from '../../src/errors.js';
import { SyncMetrics, type MetricsSource } from '../../src/http/metrics.js';

/** The value of one sample line (`name{labels} value`) in an exposition, or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Check several series at once: each present, with exactly this value. */
function expectSamples(text: string, expected: Record<string, number>): void {
  expect(Object.fromEntries(Object.keys(expected).map((series) => [series, sample(text, series)]))).toEqual(expected);
}

/** A sidecar with nothing to report: no upload yet, nothing at risk, no failures. */
const idle = (phase: MetricsSource['phase'] = 'ready'): MetricsSource => ({
  phase,
  lastUpload: undefined,
  unsyncedSince: undefined,
  consecutiveFailures: 0,
});

function outcome(uploaded: boolean, sizeBytes = 4096): UploadOutcome {
  return {
    snapshot: { sizeBytes, sha256: 'a'.repeat(64), takenAt: new Date(), journalMode: 'wal', durationMs: 120 },
    uploaded: uploaded
      ? { key: 'db.sqlite3', versionId: 'v1', sizeBytes, lastModified: new Date(), isLatest: true, metadata: {} }
      : undefined,
    uploadMs: uploaded ? 300 : 0,
  };
}

describe('SyncMetrics', () => {
  it('exposes every db-sync metric, at zero before anything happened', async () => {
    const metrics = new SyncMetrics(() => idle('restoring'));
    const { contentType, body } = await metrics.render();
    expect(contentType).toContain('text/plain');
    expectSamples(body, {
      db_sync_uploads_total: 0,
      db_sync_uploaded_bytes_total: 0,
      db_sync_last_successful_upload_timestamp_seconds: 0,
      db_sync_data_at_risk_seconds: 0,
      db_sync_consecutive_failures: 0,
      db_sync_ready: 0,
      db_sync_lease_held: 0,
      db_sync_snapshot_duration_seconds_count: 0,
      db_sync_upload_duration_seconds_count: 0,
    });
    expect(body).toContain('# TYPE db_sync_uploads_skipped_total counter');
    expect(body).toContain('# TYPE db_sync_failures_total counter');
    expect(body).toMatch(/^db_sync_process_resident_memory_bytes \d+/m);
  });

  it('counts uploads, bytes, skips and failures by kind, and reads the state gauges at scrape time', async () => {
    let source = idle();
    const metrics = new SyncMetrics(() => source);
    metrics.observeOutcome(outcome(true, 4096));
    metrics.observeOutcome(outcome(true, 1000));
    metrics.observeOutcome(outcome(false));
    metrics.observeRun('uploaded');
    metrics.observeRun('unchanged');
    metrics.observeRun('unchanged');
    metrics.observeRun('identical');
    metrics.observeRun(new StorageError('upload: SlowDown', { retryable: true, code: 'SlowDown' }));
    metrics.observeRun(new DbSyncError('Corrupt', 'snapshot failed its check'));
    metrics.observeRun(new Error('boom'));
    const at = new Date(Date.now() - 60_000);
    source = {
      phase: 'ready',
      lastUpload: { at: at.toISOString() },
      unsyncedSince: new Date(Date.now() - 42_000).toISOString(),
      consecutiveFailures: 3,
      lease: { state: 'held' },
    };
    const { body } = await metrics.render();
    expectSamples(body, {
      db_sync_uploads_total: 2,
      db_sync_uploaded_bytes_total: 5096,
      db_sync_snapshot_duration_seconds_count: 3,
      db_sync_upload_duration_seconds_count: 2,
      'db_sync_uploads_skipped_total{reason="unchanged"}': 2,
      'db_sync_uploads_skipped_total{reason="identical"}': 1,
      'db_sync_failures_total{kind="SlowDown"}': 1,
      'db_sync_failures_total{kind="Corrupt"}': 1,
      'db_sync_failures_total{kind="Error"}': 1,
      db_sync_last_successful_upload_timestamp_seconds: at.getTime() / 1000,
      db_sync_consecutive_failures: 3,
      db_sync_ready: 1,
      db_sync_lease_held: 1,
    });
    expect(sample(body, 'db_sync_data_at_risk_seconds')).toBeGreaterThanOrEqual(42);
    expect(sample(body, 'db_sync_data_at_risk_seconds')).toBeLessThan(100);
  });

  it('keeps separate registries per instance (two sidecars in one process do not collide)', async () => {
    const a = new SyncMetrics(() => idle());
    const b = new SyncMetrics(() => idle());
    a.observeRun('unchanged');
    expect(sample((await b.render()).body, 'db_sync_uploads_skipped_total{reason="unchanged"}')).toBeUndefined();
    expect(sample((await a.render()).body, 'db_sync_uploads_skipped_total{reason="unchanged"}')).toBe(1);
  });

  it('documents every db-sync metric in the README', () => {
    const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    const metrics = new SyncMetrics(() => idle());
    const names = metrics.registry
      .getMetricsAsArray()
      .map((m) => m.name)
      .filter((n) => !n.startsWith('db_sync_process_') && !n.startsWith('db_sync_nodejs_'));
    expect(names.length).toBeGreaterThanOrEqual(11);
    for (const name of names) expect(readme, name).toMatch(new RegExp(`^\\| \`${name}(\\{[a-z]+\\})?\` \\|`, 'm'));
  });
});
