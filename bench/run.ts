/**
 * The benchmark: db-sync against the script it replaces (sqlite3 .backup + aws s3 cp) and against
 * Litestream 0.3.13, on this machine, against its own local S3 server. See bench/README.md.
 *
 *   npm run bench                        # full run (10 MB, 200 MB, 1 GB): bench/results.json + bench/RESULTS.md
 *   npm run bench -- --quick             # smoke run: 10 MB, 1 run, short windows (results in bench/.work/results)
 *   npm run bench -- --sections upload,restore --sizes 10,200 --runs 5
 *
 * Expects `dist/` to be built (`npm run bench` builds first).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { format, resolveConfig } from 'prettier';
import { createContext, SECTIONS, type Context, type Options, type Section } from './lib/context.js';
import { CLI } from './lib/dbsync.js';
import { machineInfo, versions } from './lib/machine.js';
import { describeModel, networkModel, startNetworkProxy, type NetworkProxy } from './lib/netmodel.js';
import { GNU_TIME } from './lib/proc.js';
import { evaluateTargets, renderMarkdown, type Results } from './lib/report.js';
import { ROOT, serverSettings, startServer, stopServer } from './lib/s3.js';
import { median, round } from './lib/stats.js';
import { startIdle, type IdleRun } from './sections/idle.js';
import { transferParams } from './sections/params.js';
import { dataAtRisk } from './sections/risk.js';
import { steadySync } from './sections/sync.js';
import { restoreSize, SYNC_PATTERNS, uploadSize, type SizeResult } from './sections/transfer.js';
import { rollbackWriter } from './sections/rollback-writer.js';
import { writerImpact } from './sections/writer-impact.js';

/** `--network loopback`: the loopback companion run of a modelled one (see {@link renderResults}). */
const LOOPBACK = 'loopback';

// The SDK's Node-version notice (see src/cli.ts) in the middle of the progress lines.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const USAGE = `usage: tsx bench/run.ts [--quick] [--sections ${SECTIONS.join(',')}] [--sizes 10,200,1000]
  [--runs N] [--runs-large N] [--writer-seconds S] [--writer-size MB] [--rollback-sizes 200,1000] [--rate N] [--idle-seconds S] [--idle-size MB]
  [--interval 5s] [--no-overlap] [--out DIR] [--keep-server] [--keep-work] [--reuse-dbs] [--param-sizes 200,1000]
  [--network aws [--net-conn-mbps 85] [--net-latency-ms 50] [--net-total-mbps 300]]
               every tool talks to S3 through the network model (bench/lib/netmodel.ts); a full run
               writes bench/results-NAME.json and the side-by-side section of RESULTS.md
  [--render]   only re-render RESULTS.md (targets included) from the results*.json in --out (default bench/)
  [--merge-into DIR]
               after a run of some sections, put its figures for those sections (idle, risk, writer,
               rollback, params) into DIR/results.json with this run's command, date and load, and
               re-render DIR/RESULTS.md; the other sections' committed figures stay`;

/** Sections whose figures live at the top level of results.json, so a narrower run can replace them alone. */
const MERGEABLE = ['idle', 'risk', 'writer', 'rollback', 'params'] as const;

function parseOptions(argv: string[]): {
  opts: Options;
  out: string | undefined;
  render: boolean;
  mergeInto: string | undefined;
} {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      sections: { type: 'string' },
      sizes: { type: 'string' },
      runs: { type: 'string' },
      'runs-large': { type: 'string' },
      'writer-seconds': { type: 'string' },
      'writer-size': { type: 'string' },
      'rollback-sizes': { type: 'string' },
      rate: { type: 'string' },
      'idle-seconds': { type: 'string' },
      'idle-size': { type: 'string' },
      interval: { type: 'string' },
      'no-overlap': { type: 'boolean', default: false },
      out: { type: 'string' },
      'keep-server': { type: 'boolean', default: false },
      'keep-work': { type: 'boolean', default: false },
      'reuse-dbs': { type: 'boolean', default: false },
      render: { type: 'boolean', default: false },
      'merge-into': { type: 'string' },
      network: { type: 'string' },
      'net-conn-mbps': { type: 'string' },
      'net-latency-ms': { type: 'string' },
      'net-total-mbps': { type: 'string' },
      'param-sizes': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const quick = values.quick ?? false;
  const num = (raw: string | undefined, fallback: number, name: string): number => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}=${raw}: expected a positive number\n${USAGE}`);
    return n;
  };
  const sections = values.sections ? values.sections.split(',').map((s) => s.trim()) : [...SECTIONS];
  for (const s of sections) if (!SECTIONS.includes(s as Section)) throw new Error(`--sections: unknown section "${s}"\n${USAGE}`);
  const sizes = values.sizes ? values.sizes.split(',').map((s) => num(s.trim(), 0, 'sizes')) : quick ? [10] : [10, 200, 1000];
  const optional = (raw: string | undefined, name: string): number | undefined => (raw === undefined ? undefined : num(raw, 0, name));
  // `--network loopback`: no model, but the figures go to results-loopback.json, the loopback column of
  // the side-by-side tables (a run under the same load as the modelled one, unlike results.json).
  const network =
    values.network && values.network !== LOOPBACK
      ? networkModel(values.network, {
          connectionMBps: optional(values['net-conn-mbps'], 'net-conn-mbps'),
          firstByteMs: values['net-latency-ms'] === undefined ? undefined : Number(values['net-latency-ms']),
          totalMBps: optional(values['net-total-mbps'], 'net-total-mbps'),
        })
      : undefined;
  if (!network && (values['net-conn-mbps'] ?? values['net-latency-ms'] ?? values['net-total-mbps']) !== undefined)
    throw new Error(`--net-* options adjust a --network preset; give --network too\n${USAGE}`);
  if (network && !(network.firstByteMs >= 0)) throw new Error(`--net-latency-ms: expected 0 or more\n${USAGE}`);
  const opts: Options = {
    quick,
    sections: sections as Section[],
    sizes,
    runs: num(values.runs, quick ? 1 : 3, 'runs'),
    runsLarge: num(values['runs-large'], quick ? 1 : 2, 'runs-large'),
    writerSizeMB: num(values['writer-size'], quick ? 10 : 200, 'writer-size'),
    rollbackSizes: values['rollback-sizes']
      ? values['rollback-sizes'].split(',').map((s) => num(s.trim(), 0, 'rollback-sizes'))
      : quick
        ? [10]
        : [200, 1000],
    writerSeconds: num(values['writer-seconds'], quick ? 10 : 40, 'writer-seconds'),
    rate: num(values.rate, 200, 'rate'),
    idleSeconds: num(values['idle-seconds'], quick ? 120 : 600, 'idle-seconds'),
    idleSizeMB: num(values['idle-size'], 10, 'idle-size'),
    riskSizeMB: 10,
    overlapIdle: !values['no-overlap'],
    shortInterval: values.interval ?? '5s',
    killAfterS: quick ? [12] : [17, 21, 24],
    killAfterDefaultS: quick ? 20 : 90,
    keepServer: values['keep-server'] ?? false,
    keepWork: values['keep-work'] ?? false,
    reuseDbs: values['reuse-dbs'] ?? false,
    network,
    companion: values.network === LOOPBACK,
    paramSizes: values['param-sizes']
      ? values['param-sizes'].split(',').map((x) => num(x.trim(), 0, 'param-sizes'))
      : quick
        ? [10]
        : [200, 1000],
  };
  if (values['merge-into'] !== undefined && (network || values.network === LOOPBACK))
    throw new Error(`--merge-into merges loopback figures into results.json; not with --network\n${USAGE}`);
  return { opts, out: values.out, render: values.render ?? false, mergeInto: values['merge-into'] };
}

/** Refuse to start without the tools and the disk space the run needs. */
function preflight(opts: Options, work: string): void {
  const missing = [GNU_TIME, '/usr/bin/aws', CLI].filter((p) => !existsSync(p));
  try {
    execFileSync('sqlite3', ['--version'], { stdio: 'ignore' });
  } catch {
    missing.push('sqlite3');
  }
  if (missing.length) {
    throw new Error(
      `missing: ${missing.join(', ')}. Install with \`apt-get install -y time awscli sqlite3\`; build db-sync with \`npm run build\``,
    );
  }
  const st = statfsSync(work);
  const freeMB = (st.bavail * st.bsize) / 1e6;
  const largest = Math.max(...opts.sizes, opts.writerSizeMB, ...(opts.sections.includes('rollback') ? opts.rollbackSizes : []));
  // Pristine copies of every size, a live copy per tool, a snapshot/backup temp, three restored copies.
  const needMB = opts.sizes.reduce((a, b) => a + b, 0) + largest * 7 + 1000;
  if (freeMB < needMB) throw new Error(`${work}: ${Math.round(freeMB)} MB free, the run needs about ${Math.round(needMB)} MB`);
}

async function main(): Promise<void> {
  const { opts, out: outArg, render, mergeInto } = parseOptions(process.argv.slice(2));
  if (render) {
    const dir = outArg ?? join(ROOT, 'bench');
    const saved = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as Results;
    saved.targets = evaluateTargets(saved);
    await writeJson(join(dir, 'results.json'), saved);
    writeResultsMd(dir, renderResults(dir, saved));
    process.stderr.write(`[bench] re-rendered ${join(dir, 'RESULTS.md')}\n`);
    return;
  }
  const full = !opts.quick && opts.sections.length === SECTIONS.length;
  const work = join(ROOT, 'bench', '.work');
  const outDir = outArg ?? (full ? join(ROOT, 'bench') : join(work, 'results'));
  // Loopback figures in results.json, each network model's in results-NAME.json; RESULTS.md shows them side by side.
  const resultsName = opts.network?.name ?? (opts.companion ? LOOPBACK : undefined);
  const resultsFile = join(outDir, resultsName ? `results-${resultsName}.json` : 'results.json');
  mkdirSync(work, { recursive: true });
  for (const name of ['logs', 'results']) rmSync(join(work, name), { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  preflight(opts, work);

  const loadBefore = loadavg().map((x) => round(x, 2));
  const loadSamples: number[] = [];
  const sampler = setInterval(() => loadSamples.push(loadavg()[0] ?? 0), 30_000);
  const started = performance.now();
  const settings = serverSettings();
  process.stderr.write(`[bench] starting the benchmark's own S3 server on 127.0.0.1:${settings.port} (${settings.dir})\n`);
  const info = await startServer(settings);
  let network: NetworkProxy | undefined;
  if (opts.network) {
    network = await startNetworkProxy(info.endpoint, opts.network);
    process.stderr.write(`[bench] network model ${describeModel(opts.network)}, at ${network.endpoint}\n`);
  }
  const ctx = createContext(opts, work, settings, info, network);
  ctx.log(`load average before: ${loadBefore.join(' ')}; options: ${JSON.stringify(opts)}`);
  const failures: string[] = [];
  const sizes: Record<string, SizeResult> = {};
  const results: Results = {
    date: new Date().toISOString(),
    durationS: 0,
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    options: { ...opts },
    machine: machineInfo(work),
    versions: versions(),
    load: { before: loadBefore, after: [], during: { min: 0, median: 0, max: 0, samples: 0 } },
    sizes,
    targets: [],
    failures,
  };
  const attempt = async (name: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (error) {
      const message = `${name}: ${(error as Error).stack ?? String(error)}`;
      ctx.log(`FAILED ${message}`);
      failures.push(`${name}: ${(error as Error).message}`);
    }
  };
  const has = (s: Section): boolean => opts.sections.includes(s);
  try {
    let fresh = true;
    for (const sizeMB of opts.sizes) {
      if (!has('upload') && !has('restore') && !has('sync')) break;
      if (!fresh) await restart(ctx);
      fresh = false;
      const entry: SizeResult = {};
      sizes[String(sizeMB)] = entry;
      if (has('upload')) await attempt(`upload ${sizeMB} MB`, async () => void (entry.upload = await uploadSize(ctx, sizeMB)));
      if (has('restore')) await attempt(`restore ${sizeMB} MB`, async () => void (entry.restore = await restoreSize(ctx, sizeMB)));
      // Each sync pattern stores six more copies of the database; the server keeps deleted objects in RAM.
      let stored = has('upload') || has('restore');
      for (const { pattern, field } of has('sync') ? SYNC_PATTERNS : []) {
        if (stored) await restart(ctx);
        stored = true;
        await attempt(`steady sync (${pattern}) ${sizeMB} MB`, async () => void (entry[field] = await steadySync(ctx, sizeMB, pattern)));
      }
    }
    if (has('params')) {
      if (!fresh) await restart(ctx);
      fresh = false;
      await attempt('params', async () => void (results.params = await transferParams(ctx)));
    }
    // Hook for the steady-state sync section (change objects between snapshots, another engineer's
    // work): add it here; under --network it runs through the model like every other section.
    if (has('writer')) {
      if (!fresh) await restart(ctx);
      fresh = false;
      await attempt('writer', async () => void (results.writer = await writerImpact(ctx)));
    }
    if (has('rollback')) {
      if (!fresh) await restart(ctx);
      fresh = false;
      await attempt('rollback', async () => void (results.rollback = await rollbackWriter(ctx)));
    }
    if (has('idle') || has('risk')) {
      if (!fresh) await restart(ctx);
      let idle: IdleRun | undefined;
      if (has('idle')) await attempt('idle (start)', async () => void (idle = await startIdle(ctx)));
      if (has('risk') && (!idle || opts.overlapIdle)) {
        if (idle) ctx.log('data at risk runs inside the idle window (--no-overlap to run them one after the other)');
        await attempt('risk', async () => void (results.risk = await dataAtRisk(ctx)));
      }
      const running = idle;
      if (running) await attempt('idle', async () => void (results.idle = await running.finish()));
      if (has('risk') && idle && !opts.overlapIdle) await attempt('risk', async () => void (results.risk = await dataAtRisk(ctx)));
    }
  } finally {
    clearInterval(sampler);
    ctx.s3.destroy();
    await network?.close();
    if (!opts.keepServer) await stopServer(settings).catch((e: unknown) => ctx.log(`stopping the S3 server: ${String(e)}`));
  }
  const loadAfter = loadavg().map((x) => round(x, 2));
  const samples = loadSamples.length ? loadSamples : [loadAfter[0] ?? 0];
  const final: Results = {
    ...results,
    durationS: round((performance.now() - started) / 1000, 0),
    load: {
      before: loadBefore,
      after: loadAfter,
      during: {
        min: round(Math.min(...samples), 2),
        median: round(median(samples), 2),
        max: round(Math.max(...samples), 2),
        samples: samples.length,
      },
    },
  };
  final.targets = evaluateTargets(final);
  await writeJson(resultsFile, final);
  writeResultsMd(outDir, renderResults(outDir, resultsName ? undefined : final));
  if (mergeInto) await mergeSections(mergeInto, final, opts.sections);
  ctx.log(`load average after: ${loadAfter.join(' ')}`);
  ctx.log(`wrote ${relative(process.cwd(), join(outDir, 'RESULTS.md'))} and ${relative(process.cwd(), resultsFile)}`);
  for (const t of final.targets) ctx.log(`target ${t.met ? 'met   ' : 'MISSED'} ${t.name}: ${t.measured}`);
  // The work files (GBs of databases) go; the logs stay when something failed.
  if (!opts.keepWork) {
    const keep = new Set(['results', ...(failures.length ? ['logs'] : [])]);
    for (const entry of readdirSync(work)) if (!keep.has(entry)) rmSync(join(work, entry), { recursive: true, force: true });
  }
  if (failures.length) process.exitCode = 1;
}

/** Hand-written analysis kept below the generated tables (a re-render would otherwise drop it). */
export const RESULTS_NOTES = 'RESULTS-notes.md';

/**
 * RESULTS.md of `dir`: the loopback run (`loopback`, else `dir`/results.json) and, side by side with it,
 * every network-model run found as `dir`/results-NAME.json; then `dir`/RESULTS-notes.md when present.
 */
function renderResults(dir: string, loopback?: Results): string {
  const read = (file: string): Results => JSON.parse(readFileSync(join(dir, file), 'utf8')) as Results;
  const base = loopback ?? (existsSync(join(dir, 'results.json')) ? read('results.json') : undefined);
  const companion = `results-${LOOPBACK}.json`;
  const modelled = readdirSync(dir)
    .filter((f) => /^results-.+\.json$/.test(f) && f !== companion)
    .sort()
    .map(read);
  const rendered = renderMarkdown(base, modelled, existsSync(join(dir, companion)) ? read(companion) : undefined);
  const notes = join(dir, RESULTS_NOTES);
  return existsSync(notes) ? `${rendered.trimEnd()}\n\n${readFileSync(notes, 'utf8')}` : rendered;
}

/**
 * Put `run`'s figures for `sections` into `dir`/results.json, each marked with the run that measured it
 * (command, date, load: RESULTS.md says so above the section), recompute the targets and re-render
 * `dir`/RESULTS.md. Sections `run` did not measure keep their committed figures.
 */
async function mergeSections(dir: string, run: Results, sections: readonly Section[]): Promise<void> {
  const file = join(dir, 'results.json');
  const saved = JSON.parse(readFileSync(file, 'utf8')) as Results;
  const merged: Results = { ...saved, sectionRuns: { ...saved.sectionRuns } };
  const taken: string[] = [];
  for (const name of MERGEABLE) {
    const figures = run[name];
    if (!sections.includes(name) || figures === undefined) continue;
    (merged as unknown as Record<string, unknown>)[name] = figures;
    (merged.sectionRuns as NonNullable<Results['sectionRuns']>)[name] = { date: run.date, command: run.command, load: run.load };
    taken.push(name);
  }
  merged.targets = evaluateTargets(merged);
  await writeJson(file, merged);
  writeResultsMd(dir, renderResults(dir, merged));
  process.stderr.write(`[bench] merged ${taken.join(', ') || 'nothing'} into ${file} and re-rendered ${join(dir, 'RESULTS.md')}\n`);
}

/** Write `dir`/RESULTS.md (hand-written analysis lives in {@link RESULTS_NOTES}, which the render appends). */
function writeResultsMd(dir: string, rendered: string): void {
  writeFileSync(join(dir, 'RESULTS.md'), rendered);
}

/** Write `value` as JSON formatted the way the repository's Prettier config wants it (`npm run lint` checks it). */
async function writeJson(path: string, value: unknown): Promise<void> {
  const config = (await resolveConfig(path)) ?? {};
  writeFileSync(path, await format(JSON.stringify(value), { ...config, parser: 'json' }));
}

/** Restart the S3 server: RGW's memstore frees deleted data only hours later, so this is how memory comes back. */
async function restart(ctx: Context): Promise<void> {
  ctx.log('restarting the S3 server (frees its memory)');
  await ctx.freshServer();
  ctx.uploaded.clear();
}

main().catch((error: unknown) => {
  process.stderr.write(`[bench] ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
