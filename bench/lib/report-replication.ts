/**
 * The continuous-replication part of the report (issue 13, and issue 14's memory target for `run`): the
 * request-cost table (requests per hour by class and what they cost a month on AWS, db-sync beside
 * Litestream at each load) and the targets read off the idle/cost and data-at-risk sections.
 */
import type { IdleLoad, IdleResult, IdleScenarioResult, IdleTool } from '../sections/idle.js';
import { CONTINUOUS_LABEL, type RiskResult } from '../sections/risk.js';
import { HOURS_PER_MONTH, monthlyRequestCost } from './s3-pricing.js';
import { median } from './stats.js';

/** The report's target row (see report.ts). */
export interface ReplicationTarget {
  readonly name: string;
  readonly target: string;
  readonly measured: string;
  readonly met: boolean | null;
  readonly limits: string;
}

const LOADS: readonly IdleLoad[] = ['idle', '1 write/min', 'steady'];
const TOOLS: readonly IdleTool[] = ['db-sync (continuous)', 'litestream', 'db-sync (interval)', 'db-sync + lease'];

const f = (n: number | undefined, digits = 2): string => (n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits));
const thousands = (n: number): string => Math.round(n).toLocaleString('en');
const dollars = (n: number): string => (n < 0.01 && n > 0 ? '<$0.01' : `$${n.toFixed(2)}`);

/** The scenario of `tool` at `load`, from results that carry tool and load (older results do not). */
function find(idle: IdleResult, tool: IdleTool, load: IdleLoad): IdleScenarioResult | undefined {
  return Object.values(idle.scenarios).find((s) => s?.tool === tool && s.load === load && !s.error);
}

const loadLabel = (load: IdleLoad, rate: number | undefined): string => (load === 'steady' ? `${rate ?? '?'} writes/s` : load);

const sumOf = (ops: Partial<Record<string, number>> | undefined, pick: (op: string) => boolean): number =>
  Object.entries(ops ?? {}).reduce((a, [op, n]) => a + (pick(op) ? (n ?? 0) : 0), 0);

/** PUT-class requests per hour on change objects (segments), of a db-sync scenario. */
const segmentPuts = (s: IdleScenarioResult): number =>
  sumOf(s.segmentPerHourByOp, (op) =>
    ['PutObject', 'UploadPart', 'CreateMultipartUpload', 'CompleteMultipartUpload', 'CopyObject'].includes(op),
  );

/**
 * Uploads of `KEY` per hour (bases, or interval snapshots): whole-object PUTs that are not segments, plus
 * completed multipart uploads. Undefined for Litestream and the lease scenario (its renewals are PUTs too).
 */
function keyUploads(s: IdleScenarioResult): number | undefined {
  if (!s.segmentPerHourByOp || s.tool === 'db-sync + lease') return undefined;
  const all = s.perHourByOp;
  return (all.PutObject ?? 0) - (s.segmentPerHourByOp.PutObject ?? 0) + (all.CompleteMultipartUpload ?? 0);
}

/** CPU time as a share of one core over the process's life. */
const cpuShare = (s: IdleScenarioResult): number => (s.usage ? (100 * s.usage.cpuS) / s.usage.wallS : Number.NaN);

/**
 * "Continuous replication: requests per hour and cost": db-sync (defaults) beside Litestream (defaults)
 * at each load, then every scenario in full. Empty when the results predate the per-load scenarios.
 */
export function replicationCostTables(idle: IdleResult): string[] {
  const present = LOADS.filter((load) => find(idle, 'db-sync (continuous)', load) ?? find(idle, 'litestream', load));
  if (!present.length) return [];
  const out: string[] = [
    '### 5b. Continuous replication: requests per hour and cost',
    '',
    `Requests per hour from the window above, by billing class, and what they would cost a month (${HOURS_PER_MONTH} h) at AWS S3 Standard's request prices: PUT, COPY, POST and LIST $0.005 per 1,000; GET and HEAD $0.0004 per 1,000; DELETE free; anything unclassified priced as a PUT. Requests only: storage and transfer are not included. **db-sync** at its defaults: continuous replication on (the database is in WAL mode), a segment object (\`KEY.db-sync/<gen>/…\`) at most every second while commits come in (\`DB_SYNC_SEGMENT_INTERVAL=1s\`), a new base of \`KEY\` every hour with changes (\`DB_SYNC_BASE_INTERVAL=1h\`) or once the segments since the last base add up to half the database. **Litestream** 0.3.13 at its defaults (1 s sync interval). ${idle.sizeMB} MB database at the start; the steady writer inserts ${idle.rate ?? '?'} rows/s, one per transaction.`,
    '',
    '| load | db-sync PUT/h | db-sync GET+HEAD/h | db-sync LIST/h | db-sync $/month | Litestream PUT/h | Litestream GET+HEAD/h | Litestream LIST/h | Litestream $/month |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const load of present) {
    const cells = (s: IdleScenarioResult | undefined): string =>
      s
        ? `${thousands(s.perHour.PUT)} | ${thousands(s.perHour.GET + s.perHour.HEAD)} | ${thousands(s.perHour.LIST)} | ${dollars(monthlyRequestCost(s.perHour))}`
        : '– | – | – | –';
    out.push(
      `| ${loadLabel(load, idle.rate)} | ${cells(find(idle, 'db-sync (continuous)', load))} | ${cells(find(idle, 'litestream', load))} |`,
    );
  }
  out.push(
    '',
    "Every scenario, with the process's peak RSS and CPU (GNU time, start to exit: start-up and the shutdown base included):",
    '',
    '| load | tool | writes in window | PUT/h | of which segments | uploads of KEY/h | GET/h | HEAD/h | LIST/h | other/h | $/month | peak RSS MB | CPU s (% of a core) | note |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|',
  );
  for (const load of LOADS) {
    for (const tool of TOOLS) {
      const s = find(idle, tool, load);
      if (!s) continue;
      const segments = s.segmentPerHourByOp ? thousands(segmentPuts(s)) : '–';
      const uploads = keyUploads(s);
      const cpu = s.usage ? `${f(s.usage.cpuS, 1)} (${f(cpuShare(s), 1)} %)` : '–';
      out.push(
        `| ${loadLabel(load, idle.rate)} | ${tool} | ${thousands(s.writes)} | ${thousands(s.perHour.PUT)} | ${segments} | ${uploads === undefined ? '–' : thousands(uploads)} | ${thousands(s.perHour.GET)} | ${thousands(s.perHour.HEAD)} | ${thousands(s.perHour.LIST)} | ${thousands(s.perHour.DELETE + s.perHour.OTHER)} | ${dollars(monthlyRequestCost(s.perHour))} | ${f(s.usage?.maxRssMB, 0)} | ${cpu} | ${s.note ?? ''} |`,
      );
    }
  }
  out.push(
    '',
    '"Of which segments": PUTs of change objects (`KEY.db-sync/…`). "Uploads of KEY": new versions of the database itself (db-sync continuous: bases; interval: snapshots), each one PutObject up to 8 MiB, else a multipart upload (its parts + 2 requests).',
  );
  const steady = find(idle, 'db-sync (continuous)', 'steady');
  const segmentHeads = steady?.segmentPerHourByOp?.HeadObject ?? 0;
  if (steady && segmentHeads > 0)
    out.push(
      '',
      `db-sync reads each segment back with a HeadObject right after its PUT (${thousands(segmentHeads)} HEADs an hour at ${idle.rate} writes/s, ${dollars(segmentHeads * HOURS_PER_MONTH * 0.0004e-3)} a month): the store's put returns the new version's info from a HEAD, which a segment does not need.`,
    );
  const bases = steady ? keyUploads(steady) : undefined;
  if (steady && bases)
    out.push(
      '',
      `At ${idle.rate} writes/s db-sync uploaded a base about every ${f(3600 / bases, 0)} s: a ${idle.sizeMB} MB database gets a new base each time the segments since the last one add up to half its size, so the number of bases (not of segments) depends on the database's size; on a larger database they are rarer and each one larger.`,
    );
  const minute = find(idle, 'db-sync (continuous)', '1 write/min');
  if (minute && idle.windowS < 3600)
    out.push(
      '',
      `The ${(idle.windowS / 60).toFixed(0)} min window is shorter than the base interval (1 h): at 1 write/min db-sync also uploads one base an hour (one PutObject up to 8 MiB, else a multipart upload: its parts + 2 requests), a few PUTs an hour more (under $0.01 a month), which the scaled window does not show.`,
    );
  out.push('');
  return out;
}

/** Issue 13's and 14's targets for continuous replication, from whatever of the sections ran. */
export function replicationTargets(idle: IdleResult | undefined, risk: RiskResult | undefined): ReplicationTarget[] {
  const targets: ReplicationTarget[] = [];
  const cr = risk?.scenarios.find((s) => s.label === CONTINUOUS_LABEL);
  if (cr) {
    const ls = risk?.scenarios.find((s) => s.label === 'litestream');
    targets.push({
      name: 'Data at risk after SIGKILL, db-sync with continuous replication (defaults, WAL)',
      target: 'about a second of commits (median ≤ 1.5 s of writes)',
      measured:
        `median ${f(cr.medianLostSeconds)} s of writes (${cr.medianLost} rows at ${risk?.rate}/s), worst ${cr.maxLost} rows` +
        (ls ? `; Litestream median ${f(ls.medianLostSeconds)} s, worst ${ls.maxLost} rows` : ''),
      met: cr.medianLostSeconds <= 1.5,
      limits:
        'a commit waits up to DB_SYNC_SEGMENT_INTERVAL (1 s) for its segment to be sealed (the capture reads the WAL every 200 ms), then for the PUT; a segment is applied on restore only when every earlier one is there',
    });
  }
  if (!idle) return targets;
  const idleCr = find(idle, 'db-sync (continuous)', 'idle');
  const minute = find(idle, 'db-sync (continuous)', '1 write/min');
  const steady = find(idle, 'db-sync (continuous)', 'steady');
  if (idleCr && steady) {
    const segs = segmentPuts(steady);
    targets.push({
      name: 'Requests per hour, continuous replication (db-sync defaults)',
      target: `idle: 0 PUT and 0 LIST; steady writes: at most 3,600 segment PUTs an hour, plus bases`,
      measured:
        `idle PUT ${idleCr.perHour.PUT}, LIST ${idleCr.perHour.LIST}` +
        (minute ? `; 1 write/min PUT ${thousands(minute.perHour.PUT)} (${dollars(monthlyRequestCost(minute.perHour))}/month)` : '') +
        `; ${idle.rate} writes/s PUT ${thousands(steady.perHour.PUT)} of which segments ${thousands(segs)} (${dollars(monthlyRequestCost(steady.perHour))}/month)`,
      met: idleCr.perHour.PUT === 0 && idleCr.perHour.LIST === 0 && segs <= 3600 * 1.02 && !steady.note,
      limits:
        'one segment per second at most (DB_SYNC_SEGMENT_INTERVAL); the rest of the PUTs are bases, whose number grows with the write volume relative to the database size (a new base once the segments add up to half of it)',
    });
  }
  const daemons = [idleCr, minute, steady].filter((s): s is IdleScenarioResult => s?.usage !== undefined);
  const riskPeaks = cr?.runs.flatMap((x) => (x.usage ? [x.usage.maxRssMB] : [])) ?? [];
  if (daemons.length || riskPeaks.length) {
    const worst = Math.max(...daemons.map((s) => s.usage?.maxRssMB ?? 0), ...riskPeaks);
    targets.push({
      name: 'Peak RSS of `db-sync run` with continuous replication (issue 14)',
      target: 'under 100 MB',
      measured:
        daemons.map((s) => `${loadLabel(s.load ?? 'idle', idle.rate)} ${f(s.usage?.maxRssMB, 0)} MB`).join(', ') +
        (riskPeaks.length ? `; data-at-risk runs (${risk?.rate} writes/s, killed) median ${f(median(riskPeaks), 0)} MB` : '') +
        ` (${idle.sizeMB} MB database)`,
      met: worst < 100,
      limits:
        'Node + AWS SDK take ~70 MB at start; the capture adds its pending segment (≤ 8 MiB of pages in memory, then a spool file), an 8-byte hash per page (2 MiB per GiB), and each base: its backup-API copy (a 16 MB destination page cache), its check and its upload',
    });
  }
  return targets;
}
