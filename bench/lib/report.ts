/** The benchmark's outputs: results.json (everything) and RESULTS.md (tables, targets, what limits them). */
import type { IdleResult } from '../sections/idle.js';
import { networkBoundS, RANGE_BYTES, type DownloadRow, type ParamsResult, type UploadRow } from '../sections/params.js';
import { CONTINUOUS_LABEL, type RiskResult } from '../sections/risk.js';
import { SYNC_PATTERNS, type SizeResult, type TransferResult, type ToolResult } from '../sections/transfer.js';
import type { RollbackWriterResult } from '../sections/rollback-writer.js';
import type { WriterImpactResult } from '../sections/writer-impact.js';
import type { Machine, Versions } from './machine.js';
import { replicationCostTables, replicationTargets } from './report-replication.js';
import { BYTES_PER_MB, describeModel, type NetworkModel } from './netmodel.js';
import { median } from './stats.js';

export interface LoadInfo {
  /** 1, 5 and 15 minute load averages. */
  readonly before: readonly number[];
  readonly after: readonly number[];
  /** 1-minute load average sampled every 30 s during the run. */
  readonly during: { readonly min: number; readonly median: number; readonly max: number; readonly samples: number };
}

export interface Results {
  readonly date: string;
  readonly durationS: number;
  readonly command: string;
  readonly options: Record<string, unknown>;
  readonly machine: Machine;
  readonly versions: Versions;
  readonly load: LoadInfo;
  readonly sizes: Record<string, SizeResult>;
  writer?: WriterImpactResult;
  rollback?: RollbackWriterResult;
  /** Sections measured by a later, narrower run and merged in (`writer`, `rollback`): that run's command, date and load. */
  sectionRuns?: Record<string, { readonly date: string; readonly command: string; readonly load: LoadInfo }>;
  idle?: IdleResult;
  risk?: RiskResult;
  params?: ParamsResult;
  targets: Target[];
  /** Sections that failed, with their error. */
  readonly failures: string[];
}

export interface Target {
  readonly name: string;
  readonly target: string;
  readonly measured: string;
  readonly met: boolean | null;
  readonly limits: string;
}

/** A line saying which run measured `section`, when it was merged in from a narrower run than the rest. */
function sectionRunNote(r: Results, section: string): string[] {
  const run = r.sectionRuns?.[section];
  if (!run) return [];
  const l = run.load;
  return [
    `Measured by a separate run: \`${run.command}\` on ${run.date}; 1-min load before ${l.before[0]}, during ${l.during.min}-${l.during.max} (median ${l.during.median}), after ${l.after[0]}.`,
    '',
  ];
}

const f = (n: number | undefined, digits = 2): string => (n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits));

/** Evaluate the issue's targets against the results. */
export function evaluateTargets(r: Results): Target[] {
  const targets: Target[] = [];
  const sizes = Object.values(r.sizes);
  const uploads = sizes.flatMap((s) => (s.upload ? [s.upload] : []));
  if (uploads.length) {
    const worst = Math.max(...uploads.map((u) => u.ratios['vs sqlite3+aws'] ?? Number.NaN));
    targets.push({
      name: 'Snapshot + upload vs sqlite3 .backup + aws s3 cp',
      target: 'ratio <= 1.0 at every size',
      measured: uploads.map((u) => `${u.sizeMB} MB: ${f(u.ratios['vs sqlite3+aws'])}`).join(', '),
      met: worst <= 1.0,
      limits:
        uploads
          .map((u) => {
            const d = u.tools['db-sync'].median.parts ?? {};
            const s = u.tools['sqlite3+aws'].median.parts ?? {};
            return (
              `${u.sizeMB} MB: db-sync = snapshot ${f(d.snapshotS)} s + upload ${f(d.uploadS)} s + start/exit ${f(d.otherS)} s; ` +
              `script = .backup ${f(s.backupS)} s + aws cp ${f(s.copyS)} s`
            );
          })
          .join('; ') +
        ". db-sync's snapshot is the same backup-API page copy as `.backup` (in 8 MiB steps, each flushed), then quick_check and the " +
        "sha256 side by side: the check is work the script never does (about 1 s of a core per GB), the sha256 is what S3's metadata " +
        'records before the upload starts. The upload sends 8 MiB parts, 4 at a time, each streamed from the file in 1 MiB reads ' +
        '(one PUT up to 8 MiB); on loopback the S3 server shares the 2 vCPUs with both tools, and the script’s own speed moves ' +
        'with it from run to run (RESULTS-notes.md)',
    });
  }
  const restores = sizes.flatMap((s) => (s.restore ? [s.restore] : []));
  if (restores.length) {
    const worst = Math.max(...restores.map((u) => u.ratios['vs aws'] ?? Number.NaN));
    targets.push({
      name: 'Restore vs aws s3 cp (issue 14)',
      target: 'ratio <= 1.0 at every size, still verified',
      measured: restores.map((u) => `${u.sizeMB} MB: ${f(u.ratios['vs aws'])}`).join(', '),
      met: worst <= 1.0,
      limits:
        restores
          .map((u) => `${u.sizeMB} MB: db-sync ${f(u.tools['db-sync'].median.wallS)} s vs aws ${f(u.tools.aws.median.wallS)} s`)
          .join('; ') +
        '. db-sync takes 8 parallel 8 MiB ranged GETs of one version (DB_SYNC_DOWNLOAD_CONCURRENCY), writes each at its offset and ' +
        'hashes the file in order as the ranges land, checks size and sha256, fsyncs, then renames; quick_check is skipped when the ' +
        'sha256 matches metadata db-sync wrote after checking that very snapshot (DB_SYNC_INTEGRITY_CHECK=full still forces a check). ' +
        'aws s3 cp neither verifies nor fsyncs (the sha256 is about 0.6 s of a core per GB). Node and the SDK take about 0.3 s to ' +
        'start. The peer’s time moves with the local server from run to run (RESULTS-notes.md)',
    });
  }
  const steady = SYNC_PATTERNS.flatMap(({ pattern, field }) => sizes.flatMap((s) => (s[field] ? [{ pattern, u: s[field] }] : [])));
  const largestSync = Math.max(...steady.map((x) => x.u.sizeMB));
  if (steady.length) {
    const atLargest = steady.filter((x) => x.u.sizeMB === largestSync);
    targets.push({
      name: `Steady-state sync at ${largestSync} MB vs the script (issue 14)`,
      target: 'at most 0.6x, same bytes in S3 (a plain, complete SQLite file per version)',
      measured: steady
        .map(
          ({ pattern, u }) =>
            `${u.sizeMB} MB ${pattern}: ${f(u.ratios['vs sqlite3+aws'])} (sent ${f(u.dbSyncSentMB, 0)} MB, copied server-side ${f(u.dbSyncCopiedMB, 0)} MB)`,
        )
        .join('; '),
      met: atLargest.every((x) => (x.u.ratios['vs sqlite3+aws'] ?? Number.NaN) <= 0.6),
      limits:
        "db-sync builds the new version from the previous version's unchanged 8 MiB blocks (UploadPartCopy of that exact version id) " +
        'plus the changed blocks, which it sends; it still copies, checks and hashes the whole database locally, since the object is a ' +
        'complete file whose sha256 is recorded. "append": new rows at the end of every index, few blocks change. "scattered": the new ' +
        'rows land all over the (user_id, created_at) index, nearly every block changes, and there is nothing to copy server-side: the ' +
        'sync then costs what a full upload costs',
    });
  }
  const largest = Math.max(...uploads.map((u) => u.sizeMB), ...restores.map((u) => u.sizeMB));
  if (Number.isFinite(largest)) {
    const s = r.sizes[String(largest)];
    const peak = (t: ToolResult | undefined): number => (t ? Math.max(...t.runs.map((u) => u.maxRssMB)) : Number.NaN);
    const up = peak(s?.upload?.tools['db-sync']);
    const down = peak(s?.restore?.tools['db-sync']);
    const smallest = Math.min(...uploads.map((u) => u.sizeMB));
    const small = r.sizes[String(smallest)]?.upload?.tools['db-sync'];
    const daemon = r.writer?.scenarios['db-sync'].usage;
    const daemonPeak = daemon?.length ? Math.max(...daemon.map((u) => u.maxRssMB)) : Number.NaN;
    const worst = Math.max(...[up, down, daemonPeak].filter(Number.isFinite));
    targets.push({
      name: `db-sync peak RSS at ${largest} MB${largest < 1000 ? ' (1 GB not run)' : ''} (issue 14)`,
      target: '< 100 MB for upload, download and the daemon, not growing with the database',
      measured:
        `upload ${f(up, 0)} MB, download ${f(down, 0)} MB` +
        (small && smallest !== largest ? ` (upload at ${smallest} MB: ${f(peak(small), 0)} MB)` : '') +
        (Number.isFinite(daemonPeak)
          ? `; daemon (\`db-sync run\`, ${r.writer?.sizeMB} MB, a snapshot every ${r.writer?.interval}): ${f(daemonPeak, 0)} MB`
          : ''),
      met: worst < 100,
      limits:
        'Node 20 alone is 40 MB here, with the AWS SDK loaded 62 MB, the whole CLI loaded 76 MB. Parts stream from the file and ' +
        'downloads write through one 512 KiB buffer per range, with the sockets’ dead read buffers collected every 4 MiB (V8 ' +
        'otherwise lets 50-60 MB of them pile up). What is left on top: the SQLite worker thread (its own V8 isolate, about 10 MB) ' +
        "and the backup API's destination connection, which better-sqlite3 opens with its 16 MB page cache (the source and check " +
        'connections use 1 MiB); freed native memory is not always returned to the OS, so the peak of each phase stays',
    });
  }
  if (r.writer) {
    const w = r.writer;
    const base = w.scenarios['no sync'].median.p99;
    const litestream = w.scenarios.litestream.median.p99;
    const dbSync = w.scenarios['db-sync'];
    const during = dbSync.duringSnapshot?.median.p99 ?? Number.NaN;
    const worst = Math.max(...dbSync.runs.map((x) => x.max));
    const loads = Object.values(w.scenarios).flatMap((x) => x.load ?? []);
    targets.push({
      name: 'Writer p99 during db-sync snapshots (WAL)',
      target: 'within 2x of no sync and 1.5x of Litestream (same run); worst single commit under 100 ms',
      measured:
        `${f(during)} ms vs ${f(base)} ms no sync (x${f(during / base)}) and ${f(litestream)} ms Litestream (x${f(during / litestream)}); ` +
        `all inserts x${f(w.p99Ratios['db-sync (all inserts)'])}; worst commit ${f(worst, 1)} ms` +
        (dbSync.duringSnapshot ? ` (during snapshots ${f(Math.max(...dbSync.duringSnapshot.runs.map((x) => x.max)), 1)} ms)` : '') +
        '; ' +
        (w.p99Ratios['db-sync unpaced (during snapshots)'] !== undefined
          ? `unpaced (same run) during snapshots x${f(w.p99Ratios['db-sync unpaced (during snapshots)'])}; `
          : '') +
        `load ${f(Math.min(...loads), 1)}-${f(Math.max(...loads), 1)}`,
      met: during <= 2 * base && during <= 1.5 * litestream && worst < 100,
      limits:
        'WAL mode: the backup never blocks the writer on a lock. What it costs the app is CPU and I/O. CPU: on 2 vCPUs even a plain busy ' +
        "loop on a worker thread at nice 19 raised the app's p99 during the loop to x2.7-3 of the same run's p99 outside it, so the " +
        'snapshot is paced: copy, hash and page hashes work a quarter of the time (DB_SYNC_SNAPSHOT_PACE) in short pieces and sleep the ' +
        'rest, and the check and the hash run one after the other; the unpaced rows are the same build with pacing off. quick_check is one ' +
        'SQLite call and cannot be paced. I/O: the copy is flushed after each 1 MiB step (8 MiB unpaced), so the kernel writes it back ' +
        "in small pieces instead of one burst at the end, and each of the app's commit fsyncs that queues behind a flush (ext4 " +
        'data=ordered) waits for 1 MiB at most: in a separate test the paced copy at 8 MiB steps raised the p99 during the copy to ' +
        "x1.4-2.0 of the same run's p99 outside it, at 1 MiB x1.0-1.3. The upload (not in the during-snapshot " +
        'window) shares the machine with the local S3 server, which production does not; the worst commits fell outside the snapshot windows. Litestream, ' +
        `which takes no snapshot in the window, costs the app x${f(litestream / base)} of no sync itself in this run. ` +
        'On a shared machine the no-sync p99 itself is ' +
        'noise-dominated (1.2-12 ms in back-to-back 30 s windows of this machine at load < 1), so the ratio ' +
        `moves with the load (median 1-min load in this run ${f(r.load.during.median)})`,
    });
  }
  if (r.rollback) {
    for (const size of r.rollback.sizes) {
      const before = size.scenarios['backup API (db-sync before)'];
      const now = size.scenarios['db-sync upload'];
      targets.push({
        name: `Rollback-journal writer, worst wait during a snapshot (${size.sizeMB} MB)`,
        target: 'at most 1 s',
        measured: `${f(now.worstMs, 0)} ms (worst of all runs ${f(now.worstOfAllMs, 0)} ms); backup-API copy (before) ${f(before.worstMs, 0)} ms; load ${now.load.join(', ')}`,
        met: now.worstOfAllMs <= 1000,
        limits:
          'the file is copied without a lock; then, holding SHARED, db-sync reads the database and its copy side by side and rewrites ' +
          'the chunks that differ. Writers wait only for that pass: reading the database twice from the page cache (about 0.3-1 s per GB ' +
          'depending on load), plus up to 100 ms of their busy handler’s back-off',
      });
    }
  }
  // Continuous replication is the default for a WAL database; results from before it name the scenario 'db-sync, idle'.
  const idle = r.idle?.scenarios['db-sync (continuous), idle'] ?? r.idle?.scenarios['db-sync, idle'];
  if (idle) {
    targets.push({
      name: 'Requests per hour while idle (db-sync defaults, lease off: RGW fails the lease probe in a versioned bucket)',
      target: '0 PUT and 0 LIST',
      measured: `PUT ${idle.perHour.PUT}, LIST ${idle.perHour.LIST}, GET ${idle.perHour.GET}, HEAD ${idle.perHour.HEAD}`,
      met: idle.perHour.PUT === 0 && idle.perHour.LIST === 0,
      limits:
        'an unchanged database (PRAGMA data_version + stat fingerprint) costs no snapshot and no request; continuous replication reads nothing while the WAL is unchanged',
    });
  }
  const lease = r.idle?.scenarios['db-sync + lease, idle'];
  if (lease && !lease.error) {
    targets.push({
      name: 'Requests per hour while idle, with the single-writer lease on (the default where the probe passes, e.g. AWS S3)',
      target: '0 PUT and 0 LIST',
      measured: `PUT ${lease.perHour.PUT}, LIST ${lease.perHour.LIST}, GET ${lease.perHour.GET}, HEAD ${lease.perHour.HEAD}`,
      met: lease.perHour.PUT === 0 && lease.perHour.LIST === 0,
      limits: `one conditional PUT per lease renewal, every TTL/3 (TTL ${r.idle?.leaseTtl}), whether or not anything changed (README: "Cost")`,
    });
  }
  targets.push(...replicationTargets(r.idle, r.risk));
  return targets;
}

function transferTable(t: TransferResult<string>, peerRatios: string[]): string[] {
  const lines = [`| tool | wall s | MB/s | CPU s | peak RSS MB | steps (s) | runs |`, `|---|---:|---:|---:|---:|---|---:|`];
  for (const [tool, res] of Object.entries(t.tools) as Array<[string, ToolResult]>) {
    const m = res.median;
    const parts = m.parts
      ? Object.entries(m.parts)
          .map(([k, v]) => `${k.replace(/S$/, '')} ${f(v)}`)
          .join(', ')
      : '';
    lines.push(`| ${tool} | ${f(m.wallS)} | ${f(m.mbPerS, 0)} | ${f(m.cpuS)} | ${f(m.maxRssMB, 0)} | ${parts} | ${res.runs.length} |`);
  }
  lines.push(
    '',
    `db-sync's median wall time over the peers' (< 1 is faster): ${peerRatios.map((k) => `${k} **${f(t.ratios[k])}**`).join(', ')}.`,
  );
  return lines;
}

/**
 * RESULTS.md: the loopback run in full (`base`), then each network-model run side by side with it
 * (`modelled`, from results-NAME.json).
 */
export function renderMarkdown(base: Results | undefined, modelled: readonly Results[] = [], companion?: Results): string {
  if (base && modelled.length === 0) return renderRun(base);
  const out: string[] = [];
  if (base) out.push(renderRun(base).trimEnd(), '');
  else out.push('# db-sync benchmark results', '', 'No loopback run (results.json) in this directory.', '');
  // The loopback column: a loopback run made alongside the modelled one (same load, same options) when there is one.
  for (const m of modelled) out.push(...renderModelled(companion ?? base, m));
  return `${out.join('\n').trimEnd()}\n`;
}

function renderRun(r: Results): string {
  const out: string[] = [];
  const m = r.machine;
  const v = r.versions;
  out.push(
    '# db-sync benchmark results',
    '',
    `Generated by \`${r.command}\` on ${r.date} in ${Math.round(r.durationS / 60)} min. Raw figures: [results.json](results.json). How to run and what each section measures: [README.md](README.md).`,
    '',
    `- **Machine:** ${m.nproc} vCPU (${m.cpuModel}), ${m.memoryGiB} GiB RAM, Linux ${m.kernel}; disk: ${m.disk}.`,
    `- **S3:** ${m.s3Server}. Loopback, so these are CPU- and disk-bound figures, not network-bound.`,
    `- **Versions:** db-sync ${v.dbSync} (Node ${v.node}, SQLite ${v.sqliteInDbSync}); sqlite3 CLI ${v.sqlite3Cli}; ${v.awsCli}; Litestream ${v.litestream}; ${v.ceph}.`,
    `- **Load:** the machine was shared with other engineers' test runs. Load average (1/5/15 min) before ${r.load.before.map((x) => x.toFixed(2)).join('/')}, after ${r.load.after.map((x) => x.toFixed(2)).join('/')}; 1-min load during the run min ${f(r.load.during.min)}, median ${f(r.load.during.median)}, max ${f(r.load.during.max)} (${r.load.during.samples} samples). All figures are medians of several runs for that reason.`,
    `- **Options:** ${Object.entries(r.options)
      .map(([k, x]) => `${k}=${JSON.stringify(x)}`)
      .join(', ')}.`,
    '',
  );
  if (r.failures.length) out.push('**Failed sections:**', '', ...r.failures.map((x) => `- ${x}`), '');
  if (r.targets.length) {
    out.push('## Targets', '', '| target | goal | measured | met | what limits it |', '|---|---|---|---|---|');
    for (const t of r.targets)
      out.push(`| ${t.name} | ${t.target} | ${t.measured} | ${t.met === null ? '–' : t.met ? '**met**' : '**missed**'} | ${t.limits} |`);
    out.push('');
  }
  const sizeOf = (s: SizeResult): number => s.upload?.sizeMB ?? s.restore?.sizeMB ?? s.sync?.sizeMB ?? 0;
  const sizes = Object.values(r.sizes).sort((a, b) => sizeOf(a) - sizeOf(b));
  if (sizes.some((s) => s.upload)) {
    out.push(
      '## 1. Snapshot + upload (and 3. db-sync CPU and peak RSS)',
      '',
      'Each tool gets a fresh copy of the database, open by the "app" with uncheckpointed rows in its WAL. **db-sync**: `db-sync upload` (whole process: start, backup-API snapshot on a worker thread, `quick_check`, sha256, streamed multipart upload). **sqlite3+aws**: `sqlite3 db ".backup tmp"` then `aws s3 cp tmp s3://…` (AWS CLI v2 from Debian). **litestream**: `litestream replicate` from start until its generation\'s snapshot (`*.snapshot.lz4`) is listed in the bucket (polled); CPU and RSS are the whole process. Wall, CPU and RSS are medians over runs; RSS is GNU time\'s max RSS of the process.',
      '',
    );
    for (const s of sizes) {
      if (!s.upload) continue;
      const u = s.upload;
      out.push(
        `### ${u.sizeMB} MB (${(u.sizeBytes / 1e6).toFixed(1)} MB incl. ${(u.walBytes / 1e6).toFixed(1)} MB WAL, ${u.rows.toLocaleString('en')} rows)`,
        '',
      );
      out.push(...transferTable(u, ['vs sqlite3+aws', 'vs litestream']), '');
    }
  }
  if (sizes.some((s) => s.restore)) {
    out.push(
      '## 2. Restore (and 3. db-sync CPU and peak RSS)',
      '',
      '**db-sync**: `db-sync download` to a new path (download to a temp file, size + sha256 check, `quick_check`, fsync, rename). **aws**: `aws s3 cp` of the same object (no verification). **litestream**: `litestream restore -o` of the replica the upload section made (snapshot + WAL segments). Row counts of the restored copies are checked against the source.',
      '',
    );
    for (const s of sizes) {
      if (!s.restore) continue;
      const u = s.restore;
      out.push(`### ${u.sizeMB} MB (${(u.sizeBytes / 1e6).toFixed(1)} MB object)`, '');
      out.push(...transferTable(u, ['vs aws', 'vs litestream']));
      if (u.check)
        out.push(
          '',
          `Rows in the restored copies (expected ${u.rows.toLocaleString('en')}): ${Object.entries(u.check)
            .map(([k, n]) => `${k} ${n.toLocaleString('en')}`)
            .join(', ')}.`,
        );
      out.push('');
    }
  }
  if (sizes.some((s) => s.sync ?? s.syncAppend)) {
    out.push(
      '## 1b. Steady-state sync',
      '',
      "The upload after the first one, once the app wrote 3,000 new rows and edited 100 of the newest since the last upload. **db-sync**: `db-sync upload` again (unchanged 8 MiB blocks are copied server-side from the previous version, changed ones sent). **sqlite3+aws**: the script again (every sync sends the whole file). Two patterns: **scattered**, the new rows belong to random existing users, so the `(user_id, created_at)` index (a Django ForeignKey's) takes them all over its length and nearly every block changes; **append**, the new rows belong to new users, so every index grows at its end, as in an event or audit log.",
      '',
    );
    for (const s of sizes) {
      for (const { pattern, field } of SYNC_PATTERNS) {
        const u = s[field];
        if (!u) continue;
        out.push(`### ${u.sizeMB} MB, ${pattern}`, '', ...transferTable(u, ['vs sqlite3+aws']));
        out.push('', `db-sync sent ${f(u.dbSyncSentMB, 1)} MB and copied ${f(u.dbSyncCopiedMB, 1)} MB server-side per sync (median).`, '');
      }
    }
  }
  if (r.writer) {
    const w = r.writer;
    out.push('## 4. Writer impact', '', ...sectionRunNote(r, 'writer'));
    out.push(
      `A separate process inserts one row per transaction (autocommit, \`synchronous=FULL\`, WAL) at ${w.rate}/s for ${w.seconds} s into a ${w.sizeMB} MB database, timing each INSERT including its commit. **db-sync**: \`db-sync run\` with \`DB_SYNC_INTERVAL=${w.interval}\` and interval snapshots only (\`DB_SYNC_CONTINUOUS=off\` in runs that had the setting), so a snapshot + upload starts every ${w.interval} after the previous one ends; **db-sync continuous**: \`db-sync run\` at its defaults, continuous replication of this WAL database; "during snapshots" is the inserts that overlapped a snapshot (backup copy + check + hash, from db-sync's log). **litestream**: \`litestream replicate\` after its first snapshot. Medians over ${w.scenarios['no sync'].runs.length} runs of each run's percentile (max: the median of each run's worst insert).`,
      '',
      '| scenario | inserts | p50 ms | p99 ms | p99.9 ms | max ms | p99 vs no sync | 1-min load per run | sync tool CPU s | sync tool peak RSS MB |',
      '|---|---:|---:|---:|---:|---:|---:|---|---:|---:|',
    );
    const base = w.scenarios['no sync'].median.p99;
    const row = (
      label: string,
      l: { count: number; p50: number; p99: number; p999?: number; max: number },
      load: readonly number[] | undefined,
      usage?: Array<{ cpuS: number; maxRssMB: number }>,
    ): string => {
      const cpu = usage?.length ? f(usage.map((u) => u.cpuS).sort((a, b) => a - b)[Math.floor(usage.length / 2)]) : '';
      const rss = usage?.length ? f(Math.max(...usage.map((u) => u.maxRssMB)), 0) : '';
      return `| ${label} | ${l.count} | ${f(l.p50)} | ${f(l.p99)} | ${f(l.p999)} | ${f(l.max, 1)} | x${f(l.p99 / base)} | ${(load ?? []).join(', ')} | ${cpu} | ${rss} |`;
    };
    out.push(row('no sync', w.scenarios['no sync'].median, w.scenarios['no sync'].load));
    const dbSync = w.scenarios['db-sync'];
    out.push(row(`db-sync run (${w.interval}), all inserts`, dbSync.median, dbSync.load, dbSync.usage));
    const during = dbSync.duringSnapshot;
    if (during) out.push(row('db-sync run, inserts during snapshots', during.median, dbSync.load));
    // Runs from before snapshot pacing existed have no such scenario.
    const unpaced = (w.scenarios as Partial<typeof w.scenarios>)['db-sync unpaced'];
    if (unpaced) {
      out.push(row('db-sync run unpaced (`DB_SYNC_SNAPSHOT_PACE=100%`), all inserts', unpaced.median, unpaced.load, unpaced.usage));
      if (unpaced.duringSnapshot)
        out.push(row('db-sync run unpaced, inserts during snapshots', unpaced.duringSnapshot.median, unpaced.load));
    }
    // Runs from before continuous replication existed have no such scenario.
    const continuous = (w.scenarios as Partial<typeof w.scenarios>)['db-sync continuous'];
    if (continuous) out.push(row('db-sync run, continuous replication (default)', continuous.median, continuous.load, continuous.usage));
    out.push(row('litestream replicate', w.scenarios.litestream.median, w.scenarios.litestream.load, w.scenarios.litestream.usage));
    const snaps = w.scenarios['db-sync'].snapshots;
    const unpacedSnaps = unpaced?.snapshots;
    if (snaps) {
      out.push(
        '',
        `db-sync took ${snaps.perRun.join(', ')} snapshots in the window (per run); median snapshot ${f(snaps.snapshotS)} s, upload ${f(snaps.uploadS)} s` +
          (unpacedSnaps
            ? ` (unpaced: ${unpacedSnaps.perRun.join(', ')} snapshots, ${f(unpacedSnaps.snapshotS)} s, upload ${f(unpacedSnaps.uploadS)} s)`
            : '') +
          `. Failed inserts (busy past 5 s): ${Object.entries(w.scenarios)
            .map(([k, s]) => `${k} ${s.errors.reduce((a, b) => a + b, 0)}`)
            .join(', ')}.`,
      );
    }
    out.push('');
  }
  if (r.rollback) {
    out.push('## 4b. Rollback-journal writer', '', ...sectionRunNote(r, 'rollback'));
    out.push(
      "Django's default database: `journal_mode=delete`. A separate process inserts one row per transaction (`synchronous=FULL`, Django's 5 s busy timeout) while the database is copied " +
        `${r.rollback.copies} times per run, a second apart. In rollback mode a reader's SHARED lock keeps writers from committing, so the figure is the app's worst single insert among those overlapping a copy. ` +
        '**backup API (db-sync before)**: a one-step backup-API copy, as db-sync snapshotted before (SHARED held for the whole copy). **db-sync upload**: the whole `db-sync upload` process (unlocked copy, short locked compare-and-fix pass, check, hash, upload). Scenarios alternate.',
      '',
      '| size | scenario | inserts during copies (per run) | p99 ms (per run) | worst ms (median of runs) | worst of all runs ms | copy s | failed inserts | 1-min load per run |',
      '|---:|---|---|---|---:|---:|---:|---:|---|',
    );
    for (const size of r.rollback.sizes) {
      for (const [name, sc] of Object.entries(size.scenarios)) {
        out.push(
          `| ${size.sizeMB} MB | ${name} | ${sc.runs.map((x) => x.count).join(', ')} | ${sc.runs.map((x) => f(x.p99, 1)).join(', ')} | ${f(sc.worstMs, 0)} | ${f(sc.worstOfAllMs, 0)} | ${f(sc.copyS)} | ${sc.errors.reduce((a, b) => a + b, 0)} | ${sc.load.join(', ')} |`,
        );
      }
    }
    out.push('');
  }
  if (r.idle) {
    const i = r.idle;
    const perLoad = i.rate !== undefined;
    out.push(
      perLoad ? '## 5. Request cost: S3 requests per hour, idle and under writes' : '## 5. Idle cost: S3 requests per hour',
      '',
      ...sectionRunNote(r, 'idle'),
      `Counted by a proxy in front of the S3 server, one per tool, over the same ${i.windowS} s window (${(i.windowS / 60).toFixed(1)} min; scaled to one hour, so a request that happens once per ${i.windowS} s counts ${f(3600 / i.windowS, 1)} times). ${i.sizeMB} MB database; the app keeps its connection open. Start-up requests are excluded (db-sync starts already in sync; Litestream after its first snapshot)${perLoad ? '; where the app writes, one row is committed just before the window, so the first base db-sync takes on the first change after its start is start-up too' : ''}. ` +
        (perLoad
          ? `**db-sync (continuous)**: db-sync at its defaults, which for this WAL database means continuous replication (segments about every second of commits, bases between). **db-sync (interval)**: \`DB_SYNC_CONTINUOUS=off\`, snapshots every \`DB_SYNC_INTERVAL\`, ${i.dbSyncInterval}. `
          : `db-sync at its default interval (${i.dbSyncInterval}). `) +
        `Litestream at its defaults (1 s sync interval). "1 write/min": one INSERT a minute, the first 30 s into the window.${perLoad ? ` "${i.rate} writes/s": a separate process inserting one row per transaction for the whole window.` : ''} "+ lease": db-sync's single-writer lease in an unversioned lease bucket, TTL ${i.leaseTtl} (the default).`,
      '',
      '| scenario | writes | PUT/h | LIST/h | GET/h | HEAD/h | DELETE/h | peak RSS MB | CPU s | by operation (per hour) |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    );
    for (const [name, s] of Object.entries(i.scenarios)) {
      if (!s) continue;
      if (s.error) {
        out.push(`| ${name} | – | – | – | – | – | – | – | – | did not start: ${s.error.replace(/\|/g, '/').slice(0, 200)} |`);
        continue;
      }
      const ops = Object.entries(s.perHourByOp)
        .map(([op, n]) => `${op} ${n}`)
        .join(', ');
      out.push(
        `| ${name} | ${s.writes} | ${s.perHour.PUT} | ${s.perHour.LIST} | ${s.perHour.GET} | ${s.perHour.HEAD} | ${s.perHour.DELETE} | ${f(s.usage?.maxRssMB, 0)} | ${f(s.usage?.cpuS, 1)} | ${ops || 'none'}${s.note ? ` (${s.note})` : ''} |`,
      );
    }
    out.push('', ...replicationCostTables(i));
  }
  if (r.risk) {
    const k = r.risk;
    const continuous = k.scenarios.some((x) => x.label === CONTINUOUS_LABEL);
    out.push(
      '## 6. Data at risk after SIGKILL',
      '',
      ...sectionRunNote(r, 'risk'),
      `The app inserts ${k.rate} rows/s into a ${k.sizeMB} MB database; the sync tool is SIGKILLed some seconds after the writer started (varied per run); then the database is restored from S3 and the rows committed before the kill but missing are counted. ` +
        (continuous
          ? "db-sync's copy is restored with `db-sync download` (the newest base, then its chain of segments replayed), Litestream's with `litestream restore`. **db-sync, continuous (default)**: db-sync at its defaults (continuous replication on for the WAL database); the interval rows run with `DB_SYNC_CONTINUOUS=off`."
          : "Restored with `aws s3 cp` of db-sync's key and `litestream restore`."),
      '',
      '| tool | interval | runs (killed after s: lost/committed) | median rows lost | median seconds of writes lost | worst | peak RSS MB (median) |',
      '|---|---|---|---:|---:|---:|---:|',
    );
    for (const s of k.scenarios) {
      const rss = s.runs.flatMap((x) => (x.usage ? [x.usage.maxRssMB] : []));
      out.push(
        `| ${s.label} | ${s.interval} | ${s.runs.map((x) => `${x.killAfterS}: ${x.lost}/${x.committed}`).join('; ')} | ${s.medianLost} | ${f(s.medianLostSeconds, 1)} | ${s.maxLost} | ${rss.length ? f(median(rss), 0) : '–'} |`,
      );
    }
    out.push(
      '',
      (continuous
        ? 'With continuous replication a commit is at risk until its segment is sealed (at most `DB_SYNC_SEGMENT_INTERVAL`, 1 s, after it was read from the WAL, which happens every 200 ms) and its PUT has finished. '
        : '') +
        "In interval mode db-sync's window of loss is up to one interval plus one snapshot + upload (a write just after a snapshot started waits for the next one); at the default 5 min that is everything since the last upload. Litestream's is about its 1 s sync interval.",
      '',
    );
  }
  if (r.params) out.push('## 7. Transfer parameters (SDK directly, loopback)', '', PARAMS_INTRO, '', ...paramsTables(r.params), '');
  return `${out.join('\n')}\n`;
}

const PARAMS_INTRO =
  "The AWS SDK directly, no tool around it (`bench/sections/params.ts`): (a) one GetObject stream vs N workers taking 8 MiB ranged GETs in turn, bytes counted and dropped; (b) a multipart upload of a file of random bytes with lib-storage's `Upload` (the SDK's reference uploader; db-sync's own sends the same 8 MiB parts, 4 at a time) at each part size × queue size; (c) PUTs of small objects one after the other on one connection, as a stream of change objects written every second would make them. Medians over runs, in rotating order.";

const modelOf = (r: Results): NetworkModel | undefined => (r.options as { network?: NetworkModel }).network;

const MiB = 1024 * 1024;

/** The network-alone bound of a download row (see {@link networkBoundS}). */
function downloadBound(d: DownloadRow, m: NetworkModel): number {
  const bytes = d.sizeMB * BYTES_PER_MB;
  return d.mode === 'single GetObject'
    ? networkBoundS(bytes, 1, 1, m)
    : networkBoundS(bytes, Math.ceil(bytes / RANGE_BYTES), d.concurrency, m);
}

/** The network-alone bound of an upload row: the parts, plus CreateMultipartUpload and CompleteMultipartUpload. */
function uploadBound(u: UploadRow, m: NetworkModel): number {
  const bytes = u.sizeMB * BYTES_PER_MB;
  return networkBoundS(bytes, Math.ceil(bytes / (u.partMiB * MiB)), u.queueSize, m, 2);
}

function paramsTables(p: ParamsResult, loop?: ParamsResult, model?: NetworkModel): string[] {
  const out: string[] = [];
  const side = loop !== undefined;
  const bound = (s: number, sizeMB: number): string => (model ? ` ${f(s)} | ${f(sizeMB / s, 0)} |` : '');
  const boundHead = model ? ' network alone s | network alone MB/s |' : '';
  const boundRule = model ? '---:|---:|' : '';
  const find = <T extends { sizeMB?: number }>(rows: readonly T[] | undefined, match: (x: T) => boolean): T | undefined =>
    rows?.find(match);
  out.push(
    '**(a) Download: one stream vs parallel ranged GETs**',
    '',
    (side ? '| object | mode | wall s | MB/s | loopback wall s | loopback MB/s |' : '| object | mode | wall s | MB/s |') + boundHead,
    (side ? '|---:|---|---:|---:|---:|---:|' : '|---:|---|---:|---:|') + boundRule,
  );
  for (const d of p.download) {
    const l = find<DownloadRow>(loop?.download, (x) => x.sizeMB === d.sizeMB && x.mode === d.mode);
    out.push(
      `| ${d.sizeMB} MB | ${d.mode} | ${f(d.medianS)} | ${f(d.mbPerS, 0)} |${side ? ` ${f(l?.medianS)} | ${f(l?.mbPerS, 0)} |` : ''}${model ? bound(downloadBound(d, model), d.sizeMB) : ''}`,
    );
  }
  out.push(
    '',
    '**(b) Multipart upload: part size × queue size**',
    '',
    (side
      ? '| object | part MiB | queue | wall s | MB/s | loopback wall s | loopback MB/s |'
      : '| object | part MiB | queue | wall s | MB/s |') + boundHead,
    (side ? '|---:|---:|---:|---:|---:|---:|---:|' : '|---:|---:|---:|---:|---:|') + boundRule,
  );
  for (const u of p.upload) {
    const l = find<UploadRow>(loop?.upload, (x) => x.sizeMB === u.sizeMB && x.partMiB === u.partMiB && x.queueSize === u.queueSize);
    out.push(
      `| ${u.sizeMB} MB | ${u.partMiB} | ${u.queueSize} | ${f(u.medianS)} | ${f(u.mbPerS, 0)} |${side ? ` ${f(l?.medianS)} | ${f(l?.mbPerS, 0)} |` : ''}${model ? bound(uploadBound(u, model), u.sizeMB) : ''}`,
    );
  }
  out.push(
    '',
    '**(c) Small PUTs, one after the other on one connection**',
    '',
    side
      ? '| object | PUTs | median ms | p90 ms | max ms | share of a 1 s cadence | loopback median ms |'
      : '| object | PUTs | median ms | p90 ms | max ms | share of a 1 s cadence |',
    side ? '|---:|---:|---:|---:|---:|---:|---:|' : '|---:|---:|---:|---:|---:|---:|',
  );
  for (const s of p.smallPuts) {
    const l = loop?.smallPuts.find((x) => x.kb === s.kb);
    out.push(
      `| ${s.kb} KB | ${s.puts} | ${f(s.medianMs, 0)} | ${f(s.p90Ms, 0)} | ${f(s.maxMs, 0)} | ${f(s.shareOfOneSecond * 100, 0)} % |${side ? ` ${f(l?.medianMs, 0)} |` : ''}`,
    );
  }
  return out;
}

/**
 * The defaults the parameter figures support, read off the figures (not written by hand). Under a model,
 * a measured figure is evidence about the network only where it came near what the network alone allows
 * (`networkBoundS`); where this machine held it far below that, the finding says so and falls back to the
 * network-alone figures, which are arithmetic on the model, not measurements.
 */
export function paramFindings(p: ParamsResult, model?: NetworkModel): string[] {
  const out: string[] = [];
  const measuredCounts = (measuredS: number, boundS: number): boolean => boundS / measuredS >= 0.7;
  for (const sizeMB of [...new Set(p.download.map((d) => d.sizeMB))]) {
    const rows = p.download.filter((d) => d.sizeMB === sizeMB);
    const single = rows.find((d) => d.mode === 'single GetObject');
    const ranged = rows.filter((d) => d.mode !== 'single GetObject');
    if (!single || !ranged.length) continue;
    const reached = !model || measuredCounts(single.medianS, downloadBound(single, model));
    const rate = (d: DownloadRow): number => (reached || !model ? d.mbPerS : sizeMB / downloadBound(d, model));
    const best = Math.max(...ranged.map(rate));
    // The smallest concurrency within 10 % of the best: more connections past it buy nothing.
    const enough = ranged.filter((d) => rate(d) >= best * 0.9).sort((a, b) => a.concurrency - b.concurrency)[0];
    if (!enough) continue;
    const source = reached
      ? 'measured'
      : `network alone (this run's measurements stayed far below it: one stream ${f(single.mbPerS, 0)} MB/s measured vs ${f(sizeMB / downloadBound(single, model as NetworkModel), 0)} MB/s allowed — this machine, not the model, limited them)`;
    out.push(
      `**Restore concurrency (${sizeMB} MB), ${source}:** one stream ${f(rate(single), 0)} MB/s; ranged GETs reach ${f(best, 0)} MB/s at best, and ${f(rate(enough), 0)} MB/s (within 10 % of it) already at ×${enough.concurrency} — supports a default of ${enough.concurrency} parallel 8 MiB ranged GETs (x${f(rate(enough) / rate(single))} one stream).`,
    );
  }
  for (const sizeMB of [...new Set(p.upload.map((u) => u.sizeMB))]) {
    const rows = p.upload.filter((u) => u.sizeMB === sizeMB);
    const fastest = rows.reduce((a, b) => (b.mbPerS > a.mbPerS ? b : a));
    const reached = !model || measuredCounts(fastest.medianS, uploadBound(fastest, model));
    const rate = (u: UploadRow): number => (reached || !model ? u.mbPerS : sizeMB / uploadBound(u, model));
    const best = rows.reduce((a, b) => (rate(b) > rate(a) ? b : a));
    const cheap = rows.filter((u) => rate(u) >= rate(best) * 0.9).sort((a, b) => a.partMiB * a.queueSize - b.partMiB * b.queueSize)[0];
    if (!cheap) continue;
    const source = reached
      ? 'measured'
      : `network alone (measured at most ${f(fastest.mbPerS, 0)} MB/s: this machine, not the model, limited them)`;
    out.push(
      `**Part size and upload queue (${sizeMB} MB), ${source}:** best ${f(rate(best), 0)} MB/s at ${best.partMiB} MiB × ${best.queueSize}; the least memory in flight within 10 % of it is ${cheap.partMiB} MiB × ${cheap.queueSize} (${cheap.partMiB * cheap.queueSize} MiB buffered, ${f(rate(cheap), 0)} MB/s) — supports that as the default.`,
    );
  }
  if (p.smallPuts.length) {
    const worst = p.smallPuts.reduce((a, b) => (b.medianMs > a.medianMs ? b : a));
    out.push(
      `**Change-object cadence, measured:** a small PUT costs ${p.smallPuts.map((s) => `${f(s.medianMs, 0)} ms at ${s.kb} KB`).join(', ')} (median, one connection${model ? `; ${model.firstByteMs} ms of it the model's first-byte latency, the rest this machine and the server` : ''}): at a 1 s cadence one connection is busy ${f(worst.shareOfOneSecond * 100, 0)} % of the time at ${worst.kb} KB — ${worst.shareOfOneSecond < 0.5 ? 'a 1 s cadence fits one connection with room for retries' : 'a 1 s cadence needs more than one connection or bigger, rarer objects'}.`,
    );
  }
  return out;
}

/**
 * What limits a modelled figure, from its rate and how much slower than loopback it is: near the
 * per-connection cap, the cap; hardly slower than loopback, the machine (the model's limits are not
 * reached); otherwise the model's latency per request and its caps on top of the machine.
 */
function limitOf(mbPerS: number, slowerThanLoopback: number, model: NetworkModel | undefined, overloaded: string | undefined): string {
  if (!model || !Number.isFinite(mbPerS)) return '';
  if (overloaded && mbPerS < 0.7 * model.connectionMBps) return overloaded;
  if (mbPerS >= 0.7 * model.connectionMBps) return `the per-connection cap (${model.connectionMBps} MB/s)`;
  if (Number.isFinite(slowerThanLoopback) && slowerThanLoopback < 1.2) return 'this machine (CPU), not the model: loopback is as slow';
  return `the model (${model.firstByteMs} ms per request, caps) on top of this machine`;
}

/** One network-model run, side by side with the loopback run. */
function renderModelled(base: Results | undefined, r: Results): string[] {
  const model = modelOf(r);
  const name = model?.name ?? 'model';
  const out: string[] = [
    `## 8. Under the network model \`${name}\` (side by side with loopback)`,
    '',
    `Generated by \`${r.command}\` on ${r.date} in ${Math.round(r.durationS / 60)} min. Raw figures: [results-${name}.json](results-${name}.json). Every tool (db-sync, the script's \`aws s3 cp\`, Litestream, the SDK in section 7) talked to the same local S3 server through the model's proxy (\`bench/lib/netmodel.ts\`, README: "Network model").`,
    '',
    `- **Model:** ${model ? describeModel(model) : 'unknown'}.`,
    `- **Load:** before ${r.load.before.map((x) => x.toFixed(2)).join('/')}, after ${r.load.after.map((x) => x.toFixed(2)).join('/')}; 1-min load during the run min ${f(r.load.during.min)}, median ${f(r.load.during.median)}, max ${f(r.load.during.max)} (${r.load.during.samples} samples).${base ? ` The loopback columns are from the loopback run \`${base.command}\` of ${base.date} (load before ${base.load.before.map((x) => x.toFixed(2)).join('/')}, median during ${f(base.load.during.median)}).` : ''}`,
    `- **Options:** sizes ${JSON.stringify(r.options.sizes)}, runs ${String(r.options.runs)}, sections ${JSON.stringify(r.options.sections)}.`,
    '',
  ];
  // A run on a machine far busier than its loopback run (or than its cores) measures the machine: say so
  // rather than credit the slowdown to the model.
  const cores = r.machine.nproc;
  const loadHere = r.load.during.median;
  const loadThere = base?.load.during.median ?? 0;
  const overloaded =
    loadHere > Math.max(2 * loadThere, 2 * cores)
      ? `this machine: median load ${f(loadHere, 1)} on ${cores} vCPUs (loopback run: ${f(loadThere, 1)}), far below the model's limits`
      : undefined;
  if (overloaded)
    out.push(
      `**Read with care:** the machine was overloaded during this run (median 1-min load ${f(loadHere, 1)} on ${cores} vCPUs, other engineers' test suites and benchmarks; the loopback run had ${f(loadThere, 1)}). Most figures below are this machine's limits, not the network model's: the "what limits it" column says which, and section 7 gives what the network alone allows next to each measurement.`,
      '',
    );
  if (r.failures.length) out.push('**Failed sections:**', '', ...r.failures.map((x) => `- ${x}`), '');
  const pair = (kind: 'upload' | 'restore' | 'sync' | 'syncAppend', title: string): void => {
    const sizes = Object.values(r.sizes)
      .map((s) => s[kind])
      .filter((x): x is TransferResult<string> => x !== undefined)
      .sort((a, b) => a.sizeMB - b.sizeMB);
    if (!sizes.length) return;
    out.push(
      `### ${title}`,
      '',
      `| size | tool | ${name} wall s | ${name} MB/s | loopback wall s | loopback MB/s | ${name} / loopback | what limits it |`,
      '|---:|---|---:|---:|---:|---:|---:|---|',
    );
    for (const t of sizes) {
      const l = base?.sizes[String(t.sizeMB)]?.[kind] as TransferResult<string> | undefined;
      for (const [tool, res] of Object.entries(t.tools) as Array<[string, ToolResult]>) {
        const lb = (l?.tools as Record<string, ToolResult> | undefined)?.[tool]?.median;
        const slower = lb ? res.median.wallS / lb.wallS : Number.NaN;
        out.push(
          `| ${t.sizeMB} MB | ${tool} | ${f(res.median.wallS)} | ${f(res.median.mbPerS, 0)} | ${f(lb?.wallS)} | ${f(lb?.mbPerS, 0)} | x${f(slower)} | ${limitOf(res.median.mbPerS, slower, model, overloaded)} |`,
        );
      }
      out.push(
        `| ${t.sizeMB} MB | *db-sync vs peers* | ${Object.entries(t.ratios)
          .map(([k, v]) => `${k} ${f(v)}`)
          .join(', ')} | | ${
          l
            ? Object.entries(l.ratios)
                .map(([k, v]) => `${k} ${f(v)}`)
                .join(', ')
            : '–'
        } | | | |`,
      );
    }
    out.push('');
  };
  pair('upload', '1. Snapshot + upload');
  pair('restore', '2. Restore');
  if (r.risk) {
    out.push(
      '### 6. Data at risk after SIGKILL',
      '',
      `| tool | ${name}: median s of writes lost (worst rows) | loopback: median s lost (worst rows) |`,
      '|---|---:|---:|',
    );
    for (const s of r.risk.scenarios) {
      const l = base?.risk?.scenarios.find((x) => x.label === s.label);
      out.push(`| ${s.label} | ${f(s.medianLostSeconds, 1)} (${s.maxLost}) | ${l ? `${f(l.medianLostSeconds, 1)} (${l.maxLost})` : '–'} |`);
    }
    out.push('');
  }
  if (r.writer || r.idle)
    out.push(
      'Writer impact and idle cost under the model: see results-' + name + '.json (request counts do not depend on the network).',
      '',
    );
  pair('sync', 'Steady-state sync (3,000 new rows and 100 edits since the last upload; db-sync vs the script)');
  pair('syncAppend', 'Steady-state sync, append-only rows (new rows at the end of every index)');
  if (r.params) {
    out.push(
      `### 7. Transfer parameters under \`${name}\``,
      '',
      PARAMS_INTRO,
      '',
      '"Network alone" is what the model by itself allows (an idle machine, an instant server): each wave of parallel requests costs one first-byte latency, bytes move at min(streams × per-connection cap, task cap). Where a measured figure is far below it, this machine limited it.',
      '',
      ...paramsTables(r.params, base?.params, model),
      '',
      '**Which default each figure supports** (read off the tables by `paramFindings`):',
      '',
      ...paramFindings(r.params, model).map((x) => `- ${x}`),
      '',
    );
  }
  return out;
}
