/**
 * Section 7, transfer parameters (`params`): the SDK directly, no tool around it, so the figures show what
 * the network (the model, under `--network`) does to each way of moving bytes — the evidence the
 * defaults of the other issues cite:
 *
 *   (a) download: one GetObject stream vs N parallel ranged GETs (N = 1, 2, 4, 8, 16; 8 MiB ranges, each
 *       worker taking the next range) — restore concurrency;
 *   (b) multipart upload (lib-storage's `Upload`, the SDK's reference uploader; db-sync's own uploader,
 *       src/replica/s3-upload.ts, sends the same parts): part size 8/16/32 MiB × queue size 4/8 — part
 *       size and upload concurrency;
 *   (c) many small PUTs one after the other (50, 200, 500 KB: change objects written every second) —
 *       what each costs in wall time, and so which cadence one connection can sustain.
 *
 * Bytes downloaded are counted and dropped (not written to disk): this section measures the network and
 * the server, the restore section measures whole tools.
 */
import { closeSync, createReadStream, openSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Readable } from 'node:stream';
import { rotate, type Context } from '../lib/context.js';
import { BYTES_PER_MB, type NetworkModel } from '../lib/netmodel.js';
import { client, createBucket } from '../lib/s3.js';
import { median, percentile, round } from '../lib/stats.js';

const MiB = 1024 * 1024;
/** Range size of the parallel download: AWS's guidance for byte-range fetches is 8–16 MB. */
export const RANGE_BYTES = 8 * MiB;
export const DOWNLOAD_CONCURRENCY = [1, 2, 4, 8, 16] as const;
export const PART_SIZES_MIB = [8, 16, 32] as const;
export const QUEUE_SIZES = [4, 8] as const;
export const SMALL_PUT_KB = [50, 200, 500] as const;
/** Small PUTs per size: about 20 s of 1 s change objects. */
const SMALL_PUTS = 20;

/**
 * What the network model alone allows (an idle machine, an instant server): the bound each measured
 * figure is read against. Requests of one wave overlap, so each wave costs one first-byte latency; the
 * bytes move at min(streams × per-connection cap, task cap).
 */
export function networkBoundS(bytes: number, requests: number, streams: number, m: NetworkModel, extraRequests = 0): number {
  const parallel = Math.max(1, Math.min(streams, requests));
  const waves = Math.ceil(requests / parallel) + extraRequests;
  const rate = Math.min(parallel * m.connectionMBps, m.totalMBps) * BYTES_PER_MB;
  return (waves * m.firstByteMs) / 1000 + bytes / rate;
}

export interface Timed {
  /** Wall seconds of each run. */
  readonly runsS: number[];
  readonly medianS: number;
  /** Object MB (10^6 bytes) per median second. */
  readonly mbPerS: number;
}

export interface DownloadRow extends Timed {
  readonly sizeMB: number;
  /** "single GetObject" or "ranged ×N". */
  readonly mode: string;
  readonly concurrency: number;
}

export interface UploadRow extends Timed {
  readonly sizeMB: number;
  readonly partMiB: number;
  readonly queueSize: number;
}

export interface SmallPutRow {
  readonly kb: number;
  readonly puts: number;
  readonly medianMs: number;
  readonly p90Ms: number;
  readonly maxMs: number;
  /** Share of a 1 s cadence one PUT (median) takes: above 1, one connection cannot keep up. */
  readonly shareOfOneSecond: number;
}

export interface ParamsResult {
  readonly runs: number;
  readonly download: DownloadRow[];
  readonly upload: UploadRow[];
  readonly smallPuts: SmallPutRow[];
}

async function drain(body: unknown): Promise<number> {
  let n = 0;
  for await (const chunk of body as Readable) n += (chunk as Buffer).length;
  return n;
}

/** Download `key` (`bytes` long) with N workers taking 8 MiB ranges in order; returns the bytes received. */
async function rangedDownload(s3: S3Client, bucket: string, key: string, bytes: number, workers: number): Promise<number> {
  let next = 0;
  let received = 0;
  const worker = async (): Promise<void> => {
    while (next < bytes) {
      const start = next;
      next += RANGE_BYTES;
      const end = Math.min(bytes, start + RANGE_BYTES) - 1;
      const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${start}-${end}` }));
      const got = await drain(out.Body);
      if (got !== end - start + 1) throw new Error(`range ${start}-${end}: ${got} bytes (Content-Length ${out.ContentLength})`);
      received += got;
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  return received;
}

function timed(runsS: number[], sizeMB: number): Timed {
  const m = median(runsS);
  return { runsS: runsS.map((x) => round(x, 3)), medianS: round(m, 3), mbPerS: round(sizeMB / m, 1) };
}

/** A file of `sizeMB` random bytes (incompressible, like a database page mix as far as the network cares). */
function randomFile(path: string, sizeMB: number): void {
  const fd = openSync(path, 'w');
  try {
    const block = randomBytes(MiB);
    for (let left = sizeMB * 1e6; left > 0; left -= block.length) writeSync(fd, block, 0, Math.min(block.length, left));
  } finally {
    closeSync(fd);
  }
}

export async function transferParams(ctx: Context): Promise<ParamsResult> {
  const { runs, paramSizes } = ctx.opts;
  const bucket = `params-${Date.now().toString(36)}`;
  await createBucket(ctx.s3, bucket);
  const download: DownloadRow[] = [];
  const upload: UploadRow[] = [];

  // The memstore keeps every overwritten upload until RGW's garbage collection runs, hours later: a full run
  // at 1 GB (18 uploads of the object) filled the server's store and hung. Restart it before it fills.
  const storeBudget = ctx.server.memBytes / 2;
  let stored = 0;
  for (const sizeMB of paramSizes) {
    const file = ctx.scratch(`params-${sizeMB}mb.bin`);
    randomFile(file, sizeMB);
    const bytes = sizeMB * 1e6;

    // (b) multipart upload: every part size × queue size, rotating the order per run.
    const combos = PART_SIZES_MIB.flatMap((partMiB) => QUEUE_SIZES.map((queueSize) => ({ partMiB, queueSize })));
    const upRuns = new Map<string, number[]>();
    for (let r = 0; r < runs; r += 1) {
      for (const { partMiB, queueSize } of rotate(combos, r)) {
        if (stored + bytes > storeBudget) {
          ctx.log('params: restarting the S3 server (frees its memory)');
          await ctx.freshServer();
          await createBucket(ctx.s3, bucket);
          stored = 0;
        }
        const s3 = client(ctx.info, queueSize);
        const t = performance.now();
        await new Upload({
          client: s3,
          params: { Bucket: bucket, Key: `up-${sizeMB}`, Body: createReadStream(file, { highWaterMark: MiB }) },
          partSize: partMiB * MiB,
          queueSize,
        }).done();
        const s = (performance.now() - t) / 1000;
        stored += bytes;
        s3.destroy();
        const k = `${partMiB}/${queueSize}`;
        upRuns.set(k, [...(upRuns.get(k) ?? []), s]);
        ctx.log(`params ${sizeMB} MB upload part ${partMiB} MiB × queue ${queueSize} run ${r + 1}/${runs}: ${s.toFixed(2)} s`);
      }
    }
    for (const { partMiB, queueSize } of combos)
      upload.push({ sizeMB, partMiB, queueSize, ...timed(upRuns.get(`${partMiB}/${queueSize}`) ?? [], sizeMB) });

    // (a) download the object just uploaded: one stream, then N ranged workers.
    const modes = [
      { mode: 'single GetObject', concurrency: 1 },
      ...DOWNLOAD_CONCURRENCY.map((n) => ({ mode: `ranged ×${n}`, concurrency: n })),
    ];
    const downRuns = new Map<string, number[]>();
    for (let r = 0; r < runs; r += 1) {
      for (const { mode, concurrency } of rotate(modes, r)) {
        const s3 = client(ctx.info, concurrency);
        const t = performance.now();
        const got =
          mode === 'single GetObject'
            ? await drain((await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `up-${sizeMB}` }))).Body)
            : await rangedDownload(s3, bucket, `up-${sizeMB}`, bytes, concurrency);
        const s = (performance.now() - t) / 1000;
        s3.destroy();
        if (got !== bytes) throw new Error(`params download ${mode}: got ${got} bytes, expected ${bytes}`);
        downRuns.set(mode, [...(downRuns.get(mode) ?? []), s]);
        ctx.log(`params ${sizeMB} MB download ${mode} run ${r + 1}/${runs}: ${s.toFixed(2)} s`);
      }
    }
    for (const { mode, concurrency } of modes) download.push({ sizeMB, mode, concurrency, ...timed(downRuns.get(mode) ?? [], sizeMB) });
    ctx.scratch(`params-${sizeMB}mb.bin`);
  }

  // (c) small PUTs, one after the other on one connection, as a change stream writes them.
  const smallPuts: SmallPutRow[] = [];
  const s3 = client(ctx.info, 1);
  try {
    for (const kb of SMALL_PUT_KB) {
      const body = randomBytes(kb * 1000);
      const ms: number[] = [];
      for (let i = 0; i < SMALL_PUTS; i += 1) {
        const t = performance.now();
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `changes/${kb}kb/${String(i).padStart(4, '0')}`, Body: body }));
        ms.push(performance.now() - t);
      }
      const sorted = [...ms].sort((a, b) => a - b);
      const med = median(ms);
      smallPuts.push({
        kb,
        puts: ms.length,
        medianMs: round(med, 1),
        p90Ms: round(percentile(sorted, 90), 1),
        maxMs: round(sorted[sorted.length - 1] ?? Number.NaN, 1),
        shareOfOneSecond: round(med / 1000, 3),
      });
      ctx.log(`params small PUTs ${kb} KB: median ${med.toFixed(0)} ms over ${ms.length}`);
    }
  } finally {
    s3.destroy();
  }
  return { runs, download, upload, smallPuts };
}
