/** What the numbers were measured on: the machine and every tool's version. */
import { execFileSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { CLI } from './dbsync.js';
import { LITESTREAM_BIN } from './litestream.js';

function sh(cmd: string, args: readonly string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (error) {
    return `unavailable (${(error as Error).message.split('\n')[0]})`;
  }
}

export interface Machine {
  readonly nproc: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly disk: string;
  readonly s3Server: string;
}

export interface Versions {
  readonly node: string;
  readonly sqlite3Cli: string;
  readonly sqliteInDbSync: string;
  readonly dbSync: string;
  readonly awsCli: string;
  readonly litestream: string;
  readonly ceph: string;
}

export function machineInfo(workDir: string): Machine {
  const [source, fstype] = sh('findmnt', ['-no', 'SOURCE,FSTYPE', '-T', workDir]).split(/\s+/);
  const dev = (source ?? '').replace('/dev/', '');
  let rotational = '?';
  try {
    rotational = readFileSync(`/sys/block/${dev}/queue/rotational`, 'utf8').trim() === '1' ? 'reports rotational' : 'non-rotational';
  } catch {
    // not a whole disk
  }
  const size = sh('lsblk', ['-dno', 'SIZE', source ?? '']);
  return {
    nproc: Number(sh('nproc', [])),
    cpuModel: cpus()[0]?.model ?? '?',
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: sh('uname', ['-r']),
    disk: `${source} ${fstype} ${size} (virtio block device, ${rotational}); work files in ${workDir}`,
    s3Server: 'Ceph RGW (radosgw, memstore OSD: objects in RAM) on 127.0.0.1, same machine, via scripts/s3-server.sh',
  };
}

export function versions(): Versions {
  const db = new Database(':memory:');
  const sqliteInDbSync = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
  db.close();
  return {
    node: process.version,
    sqlite3Cli: sh('sqlite3', ['--version']).split(' ')[0] ?? '?',
    sqliteInDbSync: `${sqliteInDbSync} (better-sqlite3)`,
    dbSync: `${sh(process.execPath, [CLI, '--version'])}${process.env.BENCH_DB_SYNC_CLI ? ` (${CLI})` : ''}`,
    awsCli: sh('/usr/bin/aws', ['--version']).split(' ')[0] ?? '?',
    litestream: sh(LITESTREAM_BIN, ['version']),
    ceph: sh('ceph', ['--version']).replace(/ \([0-9a-f]{40}\)/, ''),
  };
}
