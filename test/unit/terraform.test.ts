/**
 * Static checks of the Terraform under terraform/ (there is no terraform binary here).
 *
 * Every .tf file is parsed with HashiCorp's HCL parser (compiled to WebAssembly in @cdktf/hcl2json),
 * then the tests assert what matters for db-sync: the bucket keeps history but bounds its cost, the
 * task role can touch only the database's keys, and the task definition passes db-sync exactly the
 * environment variables that src/config.ts reads, starts the app after the restore and stops it
 * before the final upload. A small re-implementation of `terraform fmt`'s layout rules (hclwrite's
 * indentation and `=` alignment) keeps the files formatted.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CLOUDWATCH_NAMESPACE, DEFAULT_KEY, DEFAULT_SHUTDOWN_TIMEOUT_MS, ENV_VARS } from '../../src/config.js';
import { EMF_DIMENSION, EMF_METRICS } from '../../src/http/cloudwatch-emf.js';

// Loaded through require so TypeScript does not read the package's typings: they pull in
// `lib="dom"` for the whole program.
const require = createRequire(import.meta.url);
const hcl2json = require('@cdktf/hcl2json') as {
  parse: (filename: string, contents: string) => Promise<Record<string, unknown>>;
};

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../terraform');
const FARGATE_MAX_STOP_TIMEOUT = 120;
const DEFAULT_SHUTDOWN_SECONDS = DEFAULT_SHUTDOWN_TIMEOUT_MS / 1000;

// ---------------------------------------------------------------------------------------------
// Loading

function listTfFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    if (entry === '.terraform') continue;
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) out.push(...listTfFiles(full));
    else if (entry.endsWith('.tf')) out.push(full);
  }
  return out;
}

interface ParsedFile {
  readonly file: string;
  readonly text: string;
  readonly json: JsonObject | undefined;
  readonly error: string | undefined;
}

interface TfModule {
  readonly dir: string;
  readonly resources: Record<string, Record<string, JsonObject>>;
  readonly data: Record<string, Record<string, JsonObject>>;
  readonly variables: Record<string, JsonObject>;
  readonly outputs: Record<string, JsonObject>;
  readonly modules: Record<string, JsonObject>;
  readonly providers: Record<string, JsonObject>;
  readonly locals: JsonObject;
  readonly terraform: JsonObject[];
}

const tfFiles = listTfFiles(ROOT);
const parsedFiles: ParsedFile[] = [];
for (const file of tfFiles) {
  const text = readFileSync(file, 'utf8');
  try {
    const json = (await hcl2json.parse(file, text)) as JsonObject;
    parsedFiles.push({ file, text, json, error: undefined });
  } catch (error) {
    parsedFiles.push({ file, text, json: undefined, error: String(error) });
  }
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function asObject(value: Json | undefined, what: string): JsonObject {
  if (!isObject(value)) throw new Error(`${what}: expected an object, got ${JSON.stringify(value)}`);
  return value;
}

function asArray(value: Json | undefined, what: string): Json[] {
  if (!Array.isArray(value)) throw new Error(`${what}: expected a list, got ${JSON.stringify(value)}`);
  return value;
}

/** hcl2json renders every block as a list of bodies; labelled blocks appear once. */
function firstBody(value: Json | undefined, what: string): JsonObject {
  const list = asArray(value, what);
  expect(list, `${what} is declared more than once`).toHaveLength(1);
  return asObject(list[0], what);
}

function loadModule(relativeDir: string): TfModule {
  const dir = path.join(ROOT, relativeDir);
  const files = parsedFiles.filter((f) => path.dirname(f.file) === dir);
  if (files.length === 0) throw new Error(`no .tf files in terraform/${relativeDir}`);
  const m: TfModule = {
    dir,
    resources: {},
    data: {},
    variables: {},
    outputs: {},
    modules: {},
    providers: {},
    locals: {},
    terraform: [],
  };
  for (const f of files) {
    if (!f.json) throw new Error(`${f.file} did not parse: ${f.error}`);
    for (const [kind, body] of Object.entries(f.json)) {
      if (kind === 'resource' || kind === 'data') {
        const target = kind === 'resource' ? m.resources : m.data;
        for (const [type, byName] of Object.entries(asObject(body, kind))) {
          target[type] ??= {};
          for (const [name, blocks] of Object.entries(asObject(byName, `${kind}.${type}`))) {
            target[type][name] = firstBody(blocks, `${kind}.${type}.${name}`);
          }
        }
      } else if (kind === 'variable' || kind === 'output' || kind === 'module' || kind === 'provider') {
        const target = { variable: m.variables, output: m.outputs, module: m.modules, provider: m.providers }[kind];
        for (const [name, blocks] of Object.entries(asObject(body, kind))) {
          expect(target[name], `${kind} "${name}" is declared twice in ${relativeDir}`).toBeUndefined();
          target[name] = firstBody(blocks, `${kind}.${name}`);
        }
      } else if (kind === 'locals') {
        for (const block of asArray(body, 'locals')) Object.assign(m.locals, asObject(block, 'locals'));
      } else if (kind === 'terraform') {
        for (const block of asArray(body, 'terraform')) m.terraform.push(asObject(block, 'terraform'));
      } else {
        throw new Error(`unexpected top-level block "${kind}" in ${f.file}`);
      }
    }
  }
  return m;
}

function resource(m: TfModule, type: string, name: string): JsonObject {
  const body = m.resources[type]?.[name];
  if (!body) throw new Error(`resource ${type}.${name} not found in ${m.dir}`);
  return body;
}

function dataSource(m: TfModule, type: string, name: string): JsonObject {
  const body = m.data[type]?.[name];
  if (!body) throw new Error(`data ${type}.${name} not found in ${m.dir}`);
  return body;
}

// ---------------------------------------------------------------------------------------------
// Resolving references and evaluating the few expressions the checks need

const SIMPLE_REF = /^\$\{(var|local)\.([A-Za-z_][A-Za-z0-9_-]*)\}$/;

function variableDefault(m: TfModule, name: string): Json {
  const variable = m.variables[name];
  if (!variable) throw new Error(`var.${name} is not declared in ${m.dir}`);
  if (!('default' in variable)) throw new Error(`var.${name} has no default in ${m.dir}`);
  return variable.default ?? null;
}

function localValue(m: TfModule, name: string): Json {
  if (!(name in m.locals)) throw new Error(`local.${name} is not declared in ${m.dir}`);
  return m.locals[name] ?? null;
}

/** Follow `${var.x}` (to its default) and `${local.x}` until a value that is not a bare reference. */
function resolve(m: TfModule, value: Json | undefined, depth = 0): Json {
  if (depth > 20) throw new Error('reference cycle');
  if (typeof value !== 'string') return value ?? null;
  const ref = SIMPLE_REF.exec(value);
  if (!ref) return value;
  const next = ref[1] === 'var' ? variableDefault(m, ref[2]!) : localValue(m, ref[2]!);
  return resolve(m, next, depth + 1);
}

/** Evaluate a numeric expression: numbers, var/local references, + and -, min(), max(), parentheses. */
function evaluateNumber(m: TfModule, value: Json | undefined, depth = 0): number {
  if (depth > 20) throw new Error('reference cycle');
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') throw new Error(`not a number: ${JSON.stringify(value)}`);
  const match = /^\$\{(.*)\}$/s.exec(value);
  if (!match) throw new Error(`not an expression: ${value}`);
  const tokens = match[1]!.match(/\d+(?:\.\d+)?|[A-Za-z_][A-Za-z0-9_.-]*|[-+(),]|\S/g) ?? [];
  let pos = 0;
  const peek = () => tokens[pos];
  const take = (expected?: string) => {
    const token = tokens[pos++];
    if (token === undefined || (expected !== undefined && token !== expected)) {
      throw new Error(`cannot evaluate ${value}: expected ${expected ?? 'more'} at token ${pos}`);
    }
    return token;
  };
  const primary = (): number => {
    const token = take();
    if (/^\d/.test(token)) return Number(token);
    if (token === '(') {
      const inner = sum();
      take(')');
      return inner;
    }
    if (token === 'min' || token === 'max') {
      take('(');
      const args = [sum()];
      while (peek() === ',') {
        take(',');
        args.push(sum());
      }
      take(')');
      return token === 'min' ? Math.min(...args) : Math.max(...args);
    }
    const ref = /^(var|local)\.([A-Za-z_][A-Za-z0-9_-]*)$/.exec(token);
    if (ref) {
      const next = ref[1] === 'var' ? variableDefault(m, ref[2]!) : localValue(m, ref[2]!);
      return evaluateNumber(m, next, depth + 1);
    }
    throw new Error(`cannot evaluate ${value}: unexpected "${token}"`);
  };
  const sum = (): number => {
    let total = primary();
    while (peek() === '+' || peek() === '-') {
      const op = take();
      total = op === '+' ? total + primary() : total - primary();
    }
    return total;
  };
  const result = sum();
  if (pos !== tokens.length) throw new Error(`cannot evaluate ${value}: trailing "${tokens.slice(pos).join(' ')}"`);
  return result;
}

/** Every string in a parsed file that holds an expression. */
function expressions(value: Json | undefined, out: string[] = []): string[] {
  if (typeof value === 'string') {
    if (value.includes('${')) out.push(value);
  } else if (Array.isArray(value)) {
    for (const item of value) expressions(item, out);
  } else if (isObject(value)) {
    for (const item of Object.values(value)) expressions(item, out);
  }
  return out;
}

/** IAM's wildcard match: `*` is any run of characters, `?` any one character. */
function iamGlobMatches(pattern: string, text: string): boolean {
  const source = pattern
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`, 's').test(text);
}

/** Substitute `${name}` interpolations from `values`; any other interpolation is an error. */
function render(template: string, values: Record<string, string>): string {
  return template.replace(/\$\{([^}]*)\}/g, (_, inner: string) => {
    const v = values[inner.trim()];
    if (v === undefined) throw new Error(`cannot render "${template}": unknown "${inner}"`);
    return v;
  });
}

// ---------------------------------------------------------------------------------------------
// A subset of `terraform fmt` (hclwrite.Format): indentation by bracket nesting and alignment of
// `=` across consecutive single-line attributes.

interface FmtLine {
  readonly text: string;
  readonly blank: boolean;
  /** Net change in bracket depth ({ [ ( minus } ] )), outside strings and comments. */
  readonly netBrackets: number;
  /** Index of the `=` of a single-line attribute (hclwrite's "assign" cell), else undefined. */
  readonly assignAt: number | undefined;
}

function scanFmtLine(text: string, where: string): FmtLine {
  if (text.trim() === '') return { text, blank: true, netBrackets: 0, assignAt: undefined };
  const brackets: { at: number; delta: number }[] = [];
  let firstEqual: number | undefined;
  let tokenCount = 0;
  // Modes: code, a quoted string, or an interpolation inside one (which may nest strings).
  const stack: ('string' | 'interp')[] = [];
  const interpBraces: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    const mode = stack[stack.length - 1];
    if (mode === 'string') {
      if (c === '\\') i++;
      else if (c === '"') stack.pop();
      else if ((c === '$' || c === '%') && text[i + 1] === '{') {
        stack.push('interp');
        interpBraces.push(0);
        i++;
      }
      continue;
    }
    if (mode === 'interp') {
      if (c === '"') stack.push('string');
      else if (c === '{') interpBraces[interpBraces.length - 1]!++;
      else if (c === '}') {
        if (interpBraces[interpBraces.length - 1] === 0) {
          stack.pop();
          interpBraces.pop();
        } else interpBraces[interpBraces.length - 1]!--;
      }
      continue;
    }
    if (c === '#' || (c === '/' && text[i + 1] === '/')) {
      if (tokenCount > 0) throw new Error(`${where}: trailing comments are not supported by this check`);
      break;
    }
    if (c === ' ') continue;
    if ((c === '/' && text[i + 1] === '*') || (c === '<' && text[i + 1] === '<')) {
      throw new Error(`${where}: heredocs and block comments are not supported by this check`);
    }
    tokenCount++;
    if (c === '"') stack.push('string');
    else if ('{[('.includes(c)) brackets.push({ at: i, delta: 1 });
    else if ('}])'.includes(c)) brackets.push({ at: i, delta: -1 });
    else if (c === '=' && firstEqual === undefined) {
      const prev = text[i - 1] ?? '';
      const next = text[i + 1] ?? '';
      if (!'=!<>'.includes(prev) && next !== '=' && next !== '>' && tokenCount > 1) firstEqual = i;
    }
  }
  if (stack.length > 0) throw new Error(`${where}: string continues past the end of the line`);
  const netBrackets = brackets.reduce((n, b) => n + b.delta, 0);
  let assignAt: number | undefined;
  if (firstEqual !== undefined) {
    const after = brackets.filter((b) => b.at > firstEqual).reduce((n, b) => n + b.delta, 0);
    if (after === 0) assignAt = firstEqual;
  }
  return { text, blank: false, netBrackets, assignAt };
}

/** Whether a quoted string is exactly one `${...}` (its first interpolation closes at the end). */
function isSingleInterpolation(quoted: string): boolean {
  if (!quoted.startsWith('"${') || !quoted.endsWith('}"')) return false;
  let depth = 0;
  for (let i = 2; i < quoted.length - 1; i++) {
    const c = quoted[i];
    if (c === '{') depth++;
    else if (c === '}' && --depth === 0) return i === quoted.length - 2;
  }
  return false;
}

/** Problems `terraform fmt` would fix in this file, as "line N: ..." strings. */
function fmtProblems(text: string): string[] {
  const problems: string[] = [];
  if (!text.endsWith('\n') || text.endsWith('\n\n')) problems.push('file must end with exactly one newline');
  const rawLines = text.split('\n');
  if (rawLines[rawLines.length - 1] === '') rawLines.pop();
  const lines = rawLines.map((line, i) => {
    if (line.includes('\t')) problems.push(`line ${i + 1}: tab`);
    if (/[ \t]+$/.test(line)) problems.push(`line ${i + 1}: trailing whitespace`);
    if (line.includes('\r')) problems.push(`line ${i + 1}: carriage return`);
    return scanFmtLine(line, `line ${i + 1}`);
  });

  // Indentation: hclwrite's formatIndent.
  const indents: number[] = [];
  lines.forEach((line, i) => {
    if (line.blank) return;
    if (line.netBrackets < 0) {
      let closed = -line.netBrackets;
      while (closed > 0 && indents.length > 0) {
        const top = indents[indents.length - 1]!;
        if (closed > top) {
          closed -= top;
          indents.pop();
        } else if (closed < top) {
          indents[indents.length - 1] = top - closed;
          closed = 0;
        } else {
          indents.pop();
          closed = 0;
        }
      }
    }
    const expected = 2 * indents.length;
    const actual = line.text.length - line.text.trimStart().length;
    if (actual !== expected) problems.push(`line ${i + 1}: indented ${actual} spaces, expected ${expected}`);
    if (line.netBrackets > 0) indents.push(line.netBrackets);
  });

  // `=` alignment: hclwrite's formatCells. Consecutive lines with an assign cell form a chain;
  // each `=` sits one space after the longest key of the chain, with one space after it.
  let chain: number[] = [];
  const closeChain = () => {
    const leadWidth = (i: number) => lines[i]!.text.slice(0, lines[i]!.assignAt).trimEnd().length;
    const column = Math.max(...chain.map(leadWidth)) + 1;
    for (const i of chain) {
      const line = lines[i]!;
      if (line.assignAt !== column) problems.push(`line ${i + 1}: "=" at column ${line.assignAt! + 1}, expected ${column + 1}`);
      if (line.text[line.assignAt! + 1] !== ' ' || line.text[line.assignAt! + 2] === ' ') {
        problems.push(`line ${i + 1}: expected exactly one space after "="`);
      }
    }
    chain = [];
  };
  lines.forEach((line, i) => {
    if (line.assignAt === undefined) {
      if (chain.length > 0) closeChain();
    } else chain.push(i);
  });
  if (chain.length > 0) closeChain();

  // terraform fmt also unwraps attributes whose whole value is one interpolation.
  lines.forEach((line, i) => {
    if (line.assignAt !== undefined && isSingleInterpolation(line.text.slice(line.assignAt + 1).trim())) {
      problems.push(`line ${i + 1}: "\${...}" alone in a string; terraform fmt writes the bare expression`);
    }
  });
  return problems;
}

// ---------------------------------------------------------------------------------------------

describe('terraform files', () => {
  it('finds the modules and the example', () => {
    const dirs = new Set(tfFiles.map((f) => path.relative(ROOT, path.dirname(f))));
    expect([...dirs].sort()).toEqual(['examples/complete', 'modules/bucket', 'modules/ecs-task', 'modules/iam-policy']);
  });

  it.each(tfFiles.map((f) => path.relative(ROOT, f)))('%s parses as HCL', (relative) => {
    const parsed = parsedFiles.find((f) => path.relative(ROOT, f.file) === relative)!;
    expect(parsed.error).toBeUndefined();
    expect(parsed.json).toBeDefined();
  });

  it.each(tfFiles.map((f) => path.relative(ROOT, f)))('%s is formatted as terraform fmt would', (relative) => {
    expect(fmtProblems(readFileSync(path.join(ROOT, relative), 'utf8'))).toEqual([]);
  });

  it('the fmt check catches misaligned "=", wrong indentation, tabs and trailing spaces', () => {
    const good = 'resource "a" "b" {\n  name    = "x"\n  version = 1\n\n  tags = {\n    a = 1\n  }\n}\n';
    expect(fmtProblems(good)).toEqual([]);
    expect(fmtProblems(good.replace('name    =', 'name =')).join()).toMatch(/"=" at column/);
    expect(fmtProblems(good.replace('    a = 1', '  a = 1')).join()).toMatch(/indented 2 spaces, expected 4/);
    expect(fmtProblems(good.replace('  version', '\tversion')).join()).toMatch(/tab/);
    expect(fmtProblems(good.replace('"x"', '"x"  ')).join()).toMatch(/trailing whitespace/);
    expect(fmtProblems(good.replace('"x"', '"${var.x}"')).join()).toMatch(/bare expression/);
    // A multi-line value breaks the alignment chain; a blank line does too.
    expect(fmtProblems('x {\n  a = 1\n  bb = {\n    c = 2\n  }\n}\n')).toEqual([]);
    expect(fmtProblems('x {\n  a = 1\n\n  bb = 2\n}\n')).toEqual([]);
  });

  it('every variable and output has a description', () => {
    for (const dir of ['modules/bucket', 'modules/iam-policy', 'modules/ecs-task', 'examples/complete']) {
      const m = loadModule(dir);
      for (const [name, v] of Object.entries(m.variables)) {
        expect(typeof v.description === 'string' && v.description.length > 10, `${dir} var.${name} description`).toBe(true);
        expect(v.type, `${dir} var.${name} type`).toBeDefined();
      }
      for (const [name, o] of Object.entries(m.outputs)) {
        expect(typeof o.description === 'string' && o.description.length > 10, `${dir} output.${name} description`).toBe(true);
      }
    }
  });

  it('every var., local., data., resource and module output reference is declared (a stand-in for terraform validate)', () => {
    const dirs = ['modules/bucket', 'modules/iam-policy', 'modules/ecs-task', 'examples/complete'];
    const modules = new Map(dirs.map((d) => [d, loadModule(d)]));
    for (const [dir, m] of modules) {
      const files = parsedFiles.filter((f) => path.dirname(f.file) === m.dir);
      const exprs = files.flatMap((f) => expressions(f.json ?? null));
      expect(exprs.length).toBeGreaterThan(0);
      for (const expr of exprs) {
        for (const [, kind, name] of expr.matchAll(/\b(var|local)\.([A-Za-z_][A-Za-z0-9_-]*)/g)) {
          const declared = kind === 'var' ? name! in m.variables : name! in m.locals;
          expect(declared, `${dir}: ${kind}.${name} in ${expr}`).toBe(true);
        }
        for (const [, type, name] of expr.matchAll(/\bdata\.([a-z0-9_]+)\.([a-z0-9_]+)/g)) {
          expect(m.data[type!]?.[name!], `${dir}: data.${type}.${name}`).toBeDefined();
        }
        const withoutData = expr.replace(/\bdata\.[a-z0-9_]+\.[a-z0-9_]+/g, '');
        for (const [, type, name] of withoutData.matchAll(/(?<![\w.])(aws_[a-z0-9_]+)\.([a-z0-9_]+)/g)) {
          expect(m.resources[type!]?.[name!], `${dir}: ${type}.${name}`).toBeDefined();
        }
        for (const [, call, output] of expr.matchAll(/\bmodule\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_]+)/g)) {
          const block = m.modules[call!];
          expect(block, `${dir}: module.${call}`).toBeDefined();
          const target = path.relative(ROOT, path.resolve(m.dir, String(block!.source)));
          expect(modules.get(target)!.outputs[output!], `${dir}: module.${call}.${output}`).toBeDefined();
        }
      }
    }
  });

  it('every module call passes only declared variables and every required one', () => {
    const dirs = ['modules/bucket', 'modules/iam-policy', 'modules/ecs-task', 'examples/complete'];
    let calls = 0;
    for (const dir of dirs) {
      const m = loadModule(dir);
      for (const [name, call] of Object.entries(m.modules)) {
        calls++;
        const source = String(call.source);
        expect(source, `${dir} module.${name} source`).toMatch(/^\.\.?\//);
        const target = path.relative(ROOT, path.resolve(m.dir, source));
        expect(dirs, `${dir} module.${name} source ${source}`).toContain(target);
        const callee = loadModule(target);
        const meta = new Set(['source', 'version', 'providers', 'depends_on', 'count', 'for_each']);
        const passed = Object.keys(call).filter((k) => !meta.has(k));
        for (const arg of passed)
          expect(callee.variables[arg], `${dir} module.${name}: ${arg} is not a variable of ${target}`).toBeDefined();
        for (const [variable, body] of Object.entries(callee.variables)) {
          if (!('default' in body)) expect(passed, `${dir} module.${name} must set ${variable}`).toContain(variable);
        }
      }
    }
    expect(calls).toBeGreaterThanOrEqual(4);
  });

  it('pins Terraform and the AWS provider in every module', () => {
    for (const dir of ['modules/bucket', 'modules/iam-policy', 'modules/ecs-task', 'examples/complete']) {
      const m = loadModule(dir);
      const block = m.terraform[0];
      expect(block?.required_version, dir).toMatch(/^>= 1\.\d+/);
      const providers = asObject(firstBody(block?.required_providers, `${dir} required_providers`), dir);
      expect(asObject(providers.aws, `${dir} aws`).source).toBe('hashicorp/aws');
    }
    expect(loadModule('examples/complete').providers.aws?.region).toBe('${var.region}');
  });
});

describe('modules/bucket', () => {
  const m = loadModule('modules/bucket');

  it('enables versioning on the bucket', () => {
    const versioning = resource(m, 'aws_s3_bucket_versioning', 'this');
    expect(versioning.bucket).toBe('${aws_s3_bucket.this.id}');
    expect(firstBody(versioning.versioning_configuration, 'versioning_configuration').status).toBe('Enabled');
  });

  it('blocks all public access', () => {
    const block = resource(m, 'aws_s3_bucket_public_access_block', 'this');
    expect(block.bucket).toBe('${aws_s3_bucket.this.id}');
    for (const setting of ['block_public_acls', 'block_public_policy', 'ignore_public_acls', 'restrict_public_buckets']) {
      expect(block[setting], setting).toBe(true);
    }
  });

  it('disables ACLs (BucketOwnerEnforced)', () => {
    const controls = resource(m, 'aws_s3_bucket_ownership_controls', 'this');
    expect(firstBody(controls.rule, 'rule').object_ownership).toBe('BucketOwnerEnforced');
  });

  it('encrypts with SSE-S3 by default and SSE-KMS when a key is given', () => {
    const sse = resource(m, 'aws_s3_bucket_server_side_encryption_configuration', 'this');
    const byDefault = firstBody(firstBody(sse.rule, 'rule').apply_server_side_encryption_by_default, 'by default');
    expect(byDefault.sse_algorithm).toBe('${var.kms_key_arn == null ? "AES256" : "aws:kms"}');
    expect(byDefault.kms_master_key_id).toBe('${var.kms_key_arn}');
    expect(variableDefault(m, 'kms_key_arn')).toBeNull();
  });

  describe('lifecycle', () => {
    const lifecycle = resource(m, 'aws_s3_bucket_lifecycle_configuration', 'this');
    const rules = asArray(lifecycle.rule, 'rule').map((r) => asObject(r, 'rule'));
    const dynamicRules = asArray(asObject(lifecycle.dynamic, 'dynamic').rule, 'dynamic rule').map((d) =>
      firstBody(asObject(d, 'dynamic rule').content, 'content'),
    );

    it('every rule is enabled and has a filter', () => {
      expect(rules.length).toBeGreaterThanOrEqual(3);
      for (const rule of [...rules, ...dynamicRules]) {
        expect(rule.status, String(rule.id)).toBe('Enabled');
        expect(rule.filter, String(rule.id)).toBeDefined();
      }
    });

    it('expires noncurrent versions after N days, keeping the newest M (defaults 30 and 50)', () => {
      const withNoncurrent = rules.filter((r) => r.noncurrent_version_expiration !== undefined);
      expect(withNoncurrent).toHaveLength(1);
      const rule = withNoncurrent[0]!;
      expect(firstBody(rule.filter, 'filter')).toEqual({});
      const expiration = firstBody(rule.noncurrent_version_expiration, 'noncurrent_version_expiration');
      expect(resolve(m, expiration.noncurrent_days)).toBe(30);
      const keep = resolve(m, expiration.newer_noncurrent_versions);
      expect(keep).toBe(50);
      expect(keep as number).toBeLessThanOrEqual(100); // the S3 limit
    });

    it('expires pruned KEY.backup.* objects without the newer-versions floor, for the default key', () => {
      const backup = dynamicRules.find((r) => JSON.stringify(r.filter).includes('.backup.'));
      expect(backup).toBeDefined();
      expect(firstBody(backup!.filter, 'filter').prefix).toBe('${rule.value}.backup.');
      const expiration = firstBody(backup!.noncurrent_version_expiration, 'noncurrent_version_expiration');
      expect(resolve(m, expiration.noncurrent_days)).toBe(30);
      expect(expiration.newer_noncurrent_versions).toBeUndefined();
      expect(variableDefault(m, 'db_keys')).toEqual([DEFAULT_KEY]);
    });

    /** The dynamic rule whose filter prefix is the key (`${rule.value}`) followed by `suffix`. */
    const siblingRule = (suffix: string): JsonObject => {
      const found = dynamicRules.filter((r) => firstBody(r.filter, 'filter').prefix === `\${rule.value}${suffix}`);
      expect(found, suffix).toHaveLength(1);
      return found[0]!;
    };

    it('expires replaced lease versions after a day (the lease is rewritten every few seconds), probes included', () => {
      const lease = siblingRule('.lease');
      const noncurrent = firstBody(lease.noncurrent_version_expiration, 'noncurrent');
      expect(noncurrent.noncurrent_days).toBe(1);
      expect(noncurrent.newer_noncurrent_versions).toBeUndefined();
      expect(lease.expiration).toBeUndefined(); // the current lease object stays
    });

    it('expires lease probe objects a failed delete left behind', () => {
      expect(firstBody(siblingRule('.lease.probe.').expiration, 'expiration').days).toBe(1);
    });

    it('expires conflict copies after conflict_expiration_days, then like any replaced version', () => {
      const conflict = siblingRule('.conflict.');
      expect(resolve(m, firstBody(conflict.expiration, 'expiration').days)).toBe(30);
      expect(resolve(m, firstBody(conflict.noncurrent_version_expiration, 'noncurrent').noncurrent_days)).toBe(30);
    });

    it('expires the continuous-replication objects under KEY.db-sync/ after the restore window', () => {
      const replication = siblingRule('.db-sync/');
      expect(resolve(m, firstBody(replication.expiration, 'expiration').days)).toBe(30);
      expect(firstBody(replication.noncurrent_version_expiration, 'noncurrent').noncurrent_days).toBe(1);
    });

    it('aborts incomplete multipart uploads after 1 day', () => {
      const abort = rules.filter((r) => r.abort_incomplete_multipart_upload !== undefined);
      expect(abort).toHaveLength(1);
      expect(firstBody(abort[0]!.abort_incomplete_multipart_upload, 'abort').days_after_initiation).toBe(1);
      expect(firstBody(abort[0]!.filter, 'filter')).toEqual({});
    });

    it('removes expired delete markers', () => {
      const markers = rules.filter((r) => r.expiration !== undefined);
      expect(markers).toHaveLength(1);
      expect(firstBody(markers[0]!.expiration, 'expiration').expired_object_delete_marker).toBe(true);
    });

    it('waits for versioning before it is applied', () => {
      expect(lifecycle.depends_on).toEqual(['${aws_s3_bucket_versioning.this}']);
    });
  });

  it('denies requests without TLS by default', () => {
    expect(variableDefault(m, 'enforce_tls')).toBe(true);
    const policy = resource(m, 'aws_s3_bucket_policy', 'tls_only');
    expect(policy.count).toBe('${var.enforce_tls ? 1 : 0}');
    expect(policy.policy).toBe('${data.aws_iam_policy_document.tls_only.json}');
    const statement = firstBody(dataSource(m, 'aws_iam_policy_document', 'tls_only').statement, 'statement');
    expect(statement.effect).toBe('Deny');
    expect(statement.resources).toEqual(['${aws_s3_bucket.this.arn}', '${aws_s3_bucket.this.arn}/*']);
    expect(firstBody(statement.condition, 'condition')).toEqual({
      test: 'Bool',
      variable: 'aws:SecureTransport',
      values: ['false'],
    });
  });

  it('outputs the bucket name and ARN', () => {
    expect(m.outputs.bucket_name?.value).toBe('${aws_s3_bucket.this.id}');
    expect(m.outputs.bucket_arn?.value).toBe('${aws_s3_bucket.this.arn}');
  });
});

describe('modules/iam-policy', () => {
  const m = loadModule('modules/iam-policy');
  const document = dataSource(m, 'aws_iam_policy_document', 'this');
  const BUCKET = 'arn:aws:s3:::example-db-bucket';
  const KMS = 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
  const OBJECT_ACTIONS = ['s3:GetObject', 's3:GetObjectVersion', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'];
  const BUCKET_ACTIONS = ['s3:ListBucket', 's3:ListBucketVersions', 's3:ListBucketMultipartUploads', 's3:GetBucketVersioning'];
  const KMS_ACTIONS = ['kms:Decrypt', 'kms:GenerateDataKey'];

  interface Statement {
    readonly actions: string[];
    readonly resources: string[];
    readonly effect: string;
    readonly conditions: JsonObject[];
  }

  /** The policy as AWS would receive it, for a given key and KMS key (null: SSE-S3). */
  function renderPolicy(key: string, kmsKeyArn: string | null): Statement[] {
    const values = { 'var.bucket_arn': BUCKET, 'var.db_key': key };
    const toStatement = (body: JsonObject, extra: Record<string, string>): Statement => {
      const all = { ...values, ...extra };
      const resources = resolve(m, body.resources);
      return {
        actions: asArray(body.actions, 'actions').map(String),
        resources: asArray(resources, 'resources').map((r) => render(String(r), all)),
        effect: String(body.effect ?? 'Allow'),
        conditions: asArray(body.condition ?? [], 'condition').map((c) => {
          const condition = asObject(c, 'condition');
          return { ...condition, values: asArray(condition.values, 'values').map((v) => render(String(v), all)) };
        }),
      };
    };
    const statements = asArray(document.statement, 'statement').map((s) => toStatement(asObject(s, 'statement'), {}));
    for (const d of asArray(asObject(document.dynamic ?? {}, 'dynamic').statement ?? [], 'dynamic statement')) {
      const dynamic = asObject(d, 'dynamic statement');
      // The only dynamic statement: one per KMS key, none without.
      expect(dynamic.for_each).toBe('${var.kms_key_arn == null ? [] : [var.kms_key_arn]}');
      if (kmsKeyArn !== null) statements.push(toStatement(firstBody(dynamic.content, 'content'), { 'statement.value': kmsKeyArn }));
    }
    return statements;
  }

  function allowed(statements: Statement[], action: string, resourceArn: string, prefix?: string): boolean {
    return statements.some(
      (s) =>
        s.effect === 'Allow' &&
        s.actions.includes(action) &&
        s.resources.some((r) => iamGlobMatches(r, resourceArn)) &&
        s.conditions.every((c) => {
          expect(c.test).toBe('StringLike');
          expect(c.variable).toBe('s3:prefix');
          return prefix !== undefined && asArray(c.values, 'values').some((v) => iamGlobMatches(String(v), prefix));
        }),
    );
  }

  it('defaults db_key to the key db-sync defaults to', () => {
    expect(variableDefault(m, 'db_key')).toBe(DEFAULT_KEY);
  });

  it('grants exactly the listed actions, none with a wildcard', () => {
    for (const kms of [null, KMS]) {
      const actions = renderPolicy(DEFAULT_KEY, kms).flatMap((s) => s.actions);
      for (const action of actions) expect(action).not.toContain('*');
      const expected = [...OBJECT_ACTIONS, ...BUCKET_ACTIONS, ...(kms ? KMS_ACTIONS : [])];
      expect([...actions].sort()).toEqual([...expected].sort());
    }
  });

  it('grants an action for every S3 command the code sends, and no action the code never needs', () => {
    // Every S3 command db-sync sends, and the IAM actions it needs (GET/HEAD of a version needs both
    // object read actions; the multipart uploader's calls need s3:PutObject; HeadBucket is s3:ListBucket).
    const NEEDS: Record<string, string[]> = {
      GetObjectCommand: ['s3:GetObject', 's3:GetObjectVersion'],
      HeadObjectCommand: ['s3:GetObject', 's3:GetObjectVersion'],
      PutObjectCommand: ['s3:PutObject'],
      CopyObjectCommand: ['s3:GetObject', 's3:GetObjectVersion', 's3:PutObject'],
      // A copy larger than 5 GiB (a backup key), part by part: read the source version, write the destination's parts.
      UploadPartCopyCommand: ['s3:GetObject', 's3:GetObjectVersion', 's3:PutObject'],
      DeleteObjectCommand: ['s3:DeleteObject'],
      AbortMultipartUploadCommand: ['s3:AbortMultipartUpload'],
      ListObjectsV2Command: ['s3:ListBucket'],
      ListObjectVersionsCommand: ['s3:ListBucketVersions'],
      ListMultipartUploadsCommand: ['s3:ListBucketMultipartUploads'],
      GetBucketVersioningCommand: ['s3:GetBucketVersioning'],
      HeadBucketCommand: ['s3:ListBucket'],
      // db-sync's multipart uploader (src/replica/s3-upload.ts), for databases larger than one part.
      CreateMultipartUploadCommand: ['s3:PutObject'],
      UploadPartCommand: ['s3:PutObject'],
      CompleteMultipartUploadCommand: ['s3:PutObject'],
    };
    const srcDir = path.resolve(ROOT, '..', 'src');
    const sources = (dir: string): string[] =>
      readdirSync(dir).flatMap((e) => {
        const full = path.join(dir, e);
        return statSync(full).isDirectory() ? sources(full) : e.endsWith('.ts') ? [readFileSync(full, 'utf8')] : [];
      });
    const sent = new Set(sources(srcDir).flatMap((text) => [...text.matchAll(/new (\w+Command)\(/g)].map((match) => match[1]!)));
    expect(sent.has('GetBucketVersioningCommand')).toBe(true);
    // The multipart commands are sent by db-sync's own uploader (src/replica/s3-upload.ts), so the scan sees them.
    for (const command of ['CreateMultipartUploadCommand', 'UploadPartCommand', 'UploadPartCopyCommand', 'CompleteMultipartUploadCommand'])
      expect(sent.has(command), command).toBe(true);
    for (const command of sent) expect(NEEDS[command], `${command} is sent by src/ but not in this table`).toBeDefined();
    const needed = new Set([...sent].flatMap((command) => NEEDS[command] ?? []));
    const granted = new Set(renderPolicy(DEFAULT_KEY, null).flatMap((st) => st.actions));
    expect([...granted].sort()).toEqual([...needed].sort());
  });

  it('names no wildcard resource except the KEY.* suffix', () => {
    const statements = renderPolicy(DEFAULT_KEY, KMS);
    const resources = statements.flatMap((s) => s.resources);
    expect(resources.length).toBeGreaterThan(0);
    for (const r of resources) {
      expect(r).not.toBe('*');
      expect([BUCKET, KMS, `${BUCKET}/${DEFAULT_KEY}`, `${BUCKET}/${DEFAULT_KEY}.*`]).toContain(r);
    }
    // The templates themselves: `*` only as the `.*` after the key.
    const templates = expressions(document).filter((e) => e.includes('*'));
    const localTemplates = asArray(localValue(m, 'object_arns'), 'object_arns').map(String);
    for (const t of [...templates, ...localTemplates]) {
      expect(t.replace(/\$\{var\.db_key\}\.\*/g, '')).not.toContain('*');
    }
  });

  it('puts object actions on the key and KEY.* only, bucket actions on the bucket only, KMS on the key only', () => {
    for (const s of renderPolicy(DEFAULT_KEY, KMS)) {
      for (const action of s.actions) {
        if (OBJECT_ACTIONS.includes(action)) expect(s.resources).toEqual([`${BUCKET}/${DEFAULT_KEY}`, `${BUCKET}/${DEFAULT_KEY}.*`]);
        else if (BUCKET_ACTIONS.includes(action)) expect(s.resources).toEqual([BUCKET]);
        else expect(s.resources).toEqual([KMS]);
      }
    }
  });

  it('allows the objects db-sync writes and nothing next to them', () => {
    for (const key of [DEFAULT_KEY, 'apps/notes/data.sqlite3']) {
      const policy = renderPolicy(key, null);
      const written = [
        key,
        `${key}.backup.20250101_120000`,
        `${key}.lease`,
        `${key}.lease.probe.a1b2c3d4e5f6`,
        `${key}.conflict.20250101_120000`,
        `${key}.db-sync/0000000000000001/0000000000000001-1767225600000.seg`,
      ];
      for (const object of written) {
        for (const action of OBJECT_ACTIONS) expect(allowed(policy, action, `${BUCKET}/${object}`), `${action} ${object}`).toBe(true);
      }
      for (const object of [`${key}-wal`, `${key}x`, `other/${key}`, 'other.sqlite3', `x${key}.lease`]) {
        expect(allowed(policy, 's3:GetObject', `${BUCKET}/${object}`), object).toBe(false);
        expect(allowed(policy, 's3:PutObject', `${BUCKET}/${object}`), object).toBe(false);
      }
      expect(allowed(policy, 's3:GetObject', `arn:aws:s3:::another-bucket/${key}`)).toBe(false);
      expect(allowed(policy, 's3:DeleteObjectVersion', `${BUCKET}/${key}`)).toBe(false);
    }
  });

  it('lists versions only under the key prefix', () => {
    const policy = renderPolicy(DEFAULT_KEY, null);
    for (const action of ['s3:ListBucket', 's3:ListBucketVersions']) {
      expect(allowed(policy, action, BUCKET, DEFAULT_KEY)).toBe(true);
      expect(allowed(policy, action, BUCKET, `${DEFAULT_KEY}.backup.`)).toBe(true);
      expect(allowed(policy, action, BUCKET, `${DEFAULT_KEY}.db-sync/`)).toBe(true);
      expect(allowed(policy, action, BUCKET, '')).toBe(false);
      expect(allowed(policy, action, BUCKET, 'other')).toBe(false);
      expect(allowed(policy, action, BUCKET, undefined)).toBe(false);
    }
    expect(allowed(policy, 's3:ListBucketMultipartUploads', BUCKET)).toBe(true);
    expect(allowed(policy, 's3:GetBucketVersioning', BUCKET)).toBe(true);
  });

  it('grants KMS only when a key is configured, and only on that key', () => {
    expect(allowed(renderPolicy(DEFAULT_KEY, null), 'kms:Decrypt', KMS)).toBe(false);
    const policy = renderPolicy(DEFAULT_KEY, KMS);
    for (const action of KMS_ACTIONS) expect(allowed(policy, action, KMS)).toBe(true);
    expect(allowed(policy, 'kms:Decrypt', KMS.replace('1234abcd', 'ffffffff'))).toBe(false);
  });

  it('outputs the JSON and optionally attaches it to a role', () => {
    expect(m.outputs.json?.value).toBe('${data.aws_iam_policy_document.this.json}');
    const attachment = resource(m, 'aws_iam_role_policy', 'this');
    expect(attachment.count).toBe('${var.attach_to_role ? 1 : 0}');
    expect(attachment.role).toBe('${var.role_name}');
    expect(attachment.policy).toBe('${data.aws_iam_policy_document.this.json}');
    expect(variableDefault(m, 'attach_to_role')).toBe(false);
  });
});

describe('modules/ecs-task', () => {
  const m = loadModule('modules/ecs-task');
  const task = resource(m, 'aws_ecs_task_definition', 'this');
  const envVars = new Set(ENV_VARS);

  /** The two container lists: `var.mode == "sidecar" ? jsonencode(local.A) : jsonencode(local.B)`. */
  const selector = /^\$\{var\.mode == "sidecar" \? jsonencode\(local\.(\w+)\) : jsonencode\(local\.(\w+)\)\}$/.exec(
    String(task.container_definitions),
  );
  const containerList = (localName: string | undefined): JsonObject[] =>
    asArray(localValue(m, localName ?? ''), localName ?? '').map((c) => asObject(resolve(m, c), 'container'));
  const sidecarContainers = containerList(selector?.[1]);
  const wrapperContainers = containerList(selector?.[2]);
  const containerName = (c: JsonObject) => resolve(m, c.name);
  const dbSync = sidecarContainers.find((c) => containerName(c) === 'db-sync');
  const app = sidecarContainers.find((c) => containerName(c) !== 'db-sync');
  const wrapper = wrapperContainers[0];

  /**
   * Names of the environment variables a container sets. Literal lists are read as they are;
   * `local.x` and `concat(local.x, ...)` are followed. The app's own variables come from
   * `var.app_environment` (a for expression, no literal names) and are reported as dynamic.
   */
  function environmentNames(value: Json | undefined, depth = 0): { names: string[]; dynamic: string[] } {
    if (depth > 10) throw new Error('environment: reference cycle');
    if (value === undefined || value === null) return { names: [], dynamic: [] };
    if (Array.isArray(value)) {
      return {
        names: value.map((entry) => {
          const name = asObject(entry, 'environment entry').name;
          if (typeof name !== 'string' || name.includes('${'))
            throw new Error(`environment name is not a literal: ${JSON.stringify(name)}`);
          return name;
        }),
        dynamic: [],
      };
    }
    const text = String(value);
    const local = /^\$\{local\.(\w+)\}$/.exec(text);
    if (local) return environmentNames(localValue(m, local[1]!), depth + 1);
    const concat = /^\$\{concat\((.*)\)\}$/.exec(text);
    if (concat) {
      const parts = concat[1]!.split(',').map((p) => p.trim());
      const results = parts.map((p) => {
        if (!/^local\.\w+$/.test(p)) throw new Error(`environment: unsupported concat argument ${p}`);
        return environmentNames(`\${${p}}`, depth + 1);
      });
      return { names: results.flatMap((r) => r.names), dynamic: results.flatMap((r) => r.dynamic) };
    }
    if (/^\$\{\[for \w+ in sort\(keys\(var\.app_environment\)\) : \{ name = \w+, value = var\.app_environment\[\w+\] \}\]\}$/.test(text)) {
      return { names: [], dynamic: ['var.app_environment'] };
    }
    throw new Error(`environment: unsupported expression ${text}`);
  }

  function envValue(container: JsonObject, name: string): Json | undefined {
    const entries = resolve(m, container.environment);
    const list = Array.isArray(entries) ? entries : asArray(localValue(m, 'db_sync_environment'), 'db_sync_environment');
    return list.map((e) => asObject(e, 'env')).find((e) => e.name === name)?.value;
  }

  it('builds both variants from container definitions in locals', () => {
    expect(selector).not.toBeNull();
    expect(sidecarContainers).toHaveLength(2);
    expect(wrapperContainers).toHaveLength(1);
    expect(dbSync).toBeDefined();
    expect(app).toBeDefined();
    expect(variableDefault(m, 'mode')).toBe('sidecar');
    const validation = firstBody(m.variables.mode?.validation, 'mode validation');
    expect(validation.condition).toBe('${contains(["sidecar", "wrapper"], var.mode)}');
  });

  it('is a Fargate task with awsvpc networking, a task role and an execution role', () => {
    expect(task.requires_compatibilities).toEqual(['FARGATE']);
    expect(task.network_mode).toBe('awsvpc');
    expect(task.task_role_arn).toBe('${aws_iam_role.task.arn}');
    expect(task.execution_role_arn).toBe('${aws_iam_role.execution.arn}');
  });

  it('sets only environment variables that db-sync reads (src/config.ts ENV_VARS), in both variants', () => {
    expect(envVars.has('DB_S3_BUCKET')).toBe(true);
    const sidecar = environmentNames(dbSync!.environment);
    const wrapped = environmentNames(wrapper!.environment);
    const appOnly = environmentNames(app!.environment);
    for (const name of [...sidecar.names, ...wrapped.names, ...appOnly.names]) {
      expect(envVars.has(name), `${name} is not read by db-sync`).toBe(true);
    }
    for (const required of ['DB_S3_BUCKET', 'DB_S3_KEY', 'DB_LOCAL_PATH', 'DB_SYNC_SHUTDOWN_TIMEOUT', 'DB_SYNC_HEALTH_PORT']) {
      expect(sidecar.names).toContain(required);
    }
    expect(new Set(sidecar.names).size).toBe(sidecar.names.length);
    // The wrapper passes db-sync the same settings, plus the app's stop deadline for `exec`, plus the
    // app's own (dynamic) variables.
    expect([...wrapped.names].sort()).toEqual([...sidecar.names, 'DB_SYNC_CHILD_STOP_TIMEOUT'].sort());
    expect(wrapped.dynamic).toEqual(['var.app_environment']);
    expect(sidecar.dynamic).toEqual([]);
    expect(appOnly).toEqual({ names: [], dynamic: ['var.app_environment'] });
    for (const c of [...sidecarContainers, ...wrapperContainers]) expect(c.secrets).toBeUndefined();
  });

  it('scopes the task role policy with the same bucket and key that db-sync is given', () => {
    expect(envValue(dbSync!, 'DB_S3_KEY')).toBe('${var.db_key}');
    expect(envValue(dbSync!, 'DB_S3_BUCKET')).toBe('${var.bucket_name}');
    expect(variableDefault(m, 'db_key')).toBe(DEFAULT_KEY);
    const policy = m.modules.db_sync_policy!;
    expect(policy.source).toBe('../iam-policy');
    expect(policy.db_key).toBe('${var.db_key}');
    expect(policy.bucket_arn).toBe('${var.bucket_arn}');
    expect(policy.kms_key_arn).toBe('${var.kms_key_arn}');
    expect(policy.attach_to_role).toBe(true);
    expect(policy.role_name).toBe('${aws_iam_role.task.name}');
  });

  it('checks the sidecar with `db-sync health`', () => {
    for (const container of [dbSync!, wrapper!]) {
      const check = asObject(resolve(m, container.healthCheck), 'healthCheck');
      expect(check.command).toEqual(['CMD', 'db-sync', 'health']);
      const interval = evaluateNumber(m, check.interval);
      const timeout = evaluateNumber(m, check.timeout);
      const retries = evaluateNumber(m, check.retries);
      const startPeriod = evaluateNumber(m, check.startPeriod);
      expect(interval).toBeGreaterThanOrEqual(5);
      expect(interval).toBeLessThanOrEqual(300);
      expect(timeout).toBeGreaterThanOrEqual(2);
      expect(timeout).toBeLessThan(interval);
      expect(retries).toBeGreaterThanOrEqual(1);
      expect(retries).toBeLessThanOrEqual(10);
      expect(startPeriod).toBeGreaterThan(0);
      expect(startPeriod).toBeLessThanOrEqual(300);
    }
    expect(app!.healthCheck).toBeUndefined();
  });

  it('starts the app only once db-sync is HEALTHY (restore done), so it also stops first', () => {
    const dependsOn = asArray(resolve(m, app!.dependsOn), 'dependsOn').map((d) => asObject(d, 'dependsOn'));
    expect(dependsOn).toHaveLength(1);
    expect(resolve(m, dependsOn[0]!.containerName)).toBe(containerName(dbSync!));
    expect(dependsOn[0]!.condition).toBe('HEALTHY');
    expect(dbSync!.essential).toBe(true);
    expect(dbSync!.dependsOn).toBeUndefined();
  });

  it('gives db-sync a stopTimeout longer than its shutdown deadline, within the Fargate limit', () => {
    expect(variableDefault(m, 'shutdown_timeout_seconds')).toBe(DEFAULT_SHUTDOWN_SECONDS);
    expect(envValue(dbSync!, 'DB_SYNC_SHUTDOWN_TIMEOUT')).toBe('${var.shutdown_timeout_seconds}s');
    const sidecarStop = evaluateNumber(m, dbSync!.stopTimeout);
    expect(sidecarStop).toBeGreaterThan(DEFAULT_SHUTDOWN_SECONDS);
    expect(sidecarStop).toBeGreaterThanOrEqual(DEFAULT_SHUTDOWN_SECONDS + 5);
    expect(sidecarStop).toBeLessThanOrEqual(FARGATE_MAX_STOP_TIMEOUT);
    const appStop = evaluateNumber(m, app!.stopTimeout);
    expect(appStop).toBeGreaterThan(0);
    expect(appStop).toBeLessThanOrEqual(FARGATE_MAX_STOP_TIMEOUT);
    // The wrapper stops the app and then uploads, in one container.
    const wrapperStop = evaluateNumber(m, wrapper!.stopTimeout);
    expect(wrapperStop).toBeGreaterThan(DEFAULT_SHUTDOWN_SECONDS + appStop);
    expect(wrapperStop).toBeLessThanOrEqual(FARGATE_MAX_STOP_TIMEOUT);
    // The largest shutdown deadline the variable accepts still fits.
    const validation = String(firstBody(m.variables.shutdown_timeout_seconds?.validation, 'validation').condition);
    const max = Number(/var\.shutdown_timeout_seconds <= (\d+)/.exec(validation)?.[1]);
    expect(max + evaluateNumber(m, '${local.stop_timeout_margin_seconds}')).toBeLessThanOrEqual(FARGATE_MAX_STOP_TIMEOUT);
  });

  it('wrapper mode gives the app its own stop timeout (DB_SYNC_CHILD_STOP_TIMEOUT), which the stopTimeout covers', () => {
    const exec = asArray(localValue(m, 'exec_environment'), 'exec_environment').map((e) => asObject(e, 'env'));
    expect(exec).toEqual([{ name: 'DB_SYNC_CHILD_STOP_TIMEOUT', value: '${var.app_stop_timeout_seconds}s' }]);
    expect(String(wrapper!.environment)).toContain('local.exec_environment');
    expect(String(dbSync!.environment)).not.toContain('exec_environment');
    expect(String(localValue(m, 'wrapper_stop_timeout'))).toContain('var.app_stop_timeout_seconds + var.shutdown_timeout_seconds');
  });

  it('warns of a stalled lease wait at the health check start period, and writes CloudWatch EMF metrics', () => {
    expect(envValue(dbSync!, 'DB_SYNC_LEASE_WAIT_WARN')).toBe('${max(1, var.health_check_start_period_seconds)}s');
    expect(asObject(resolve(m, localValue(m, 'db_sync_health_check')), 'health').startPeriod).toBe(
      '${var.health_check_start_period_seconds}',
    );
    expect(envValue(dbSync!, 'DB_SYNC_CLOUDWATCH_METRICS')).toBe('${tostring(var.cloudwatch_metrics)}');
    expect(variableDefault(m, 'cloudwatch_metrics')).toBe(true);
    expect(envValue(dbSync!, 'DB_SYNC_CLOUDWATCH_NAMESPACE')).toBe('${var.cloudwatch_namespace}');
    expect(variableDefault(m, 'cloudwatch_namespace')).toBe(DEFAULT_CLOUDWATCH_NAMESPACE);
    // The dimension db-sync writes (src/commands/run.ts: s3://BUCKET/KEY), for alarms.
    expect(m.outputs.metric_dimensions?.value).toEqual({ [EMF_DIMENSION]: 's3://${var.bucket_name}/${var.db_key}' });
    expect(m.outputs.metric_namespace?.value).toBe('${var.cloudwatch_namespace}');
  });

  it('shares one task-storage volume at the database directory between the app and db-sync', () => {
    const volume = firstBody(task.volume, 'volume');
    expect(Object.keys(volume)).toEqual(['name']); // no host path, no EFS: ephemeral task storage
    const volumeName = resolve(m, volume.name);
    const mounts = [app!, dbSync!, wrapper!].map((c) =>
      asObject(asArray(resolve(m, c.mountPoints), 'mountPoints').map((p) => resolve(m, p))[0], 'mount'),
    );
    for (const mount of mounts) {
      expect(resolve(m, mount.sourceVolume)).toBe(volumeName);
      expect(mount.containerPath).toBe('${var.db_directory}');
      expect(mount.readOnly).toBe(false);
    }
    expect(String(envValue(dbSync!, 'DB_LOCAL_PATH'))).toMatch(/^\$\{var\.db_directory\}\//);
    expect(variableDefault(m, 'db_directory')).not.toBe('/app');
  });

  it('runs the app under `db-sync exec --` in the single-container variant', () => {
    expect(resolve(m, wrapper!.entryPoint)).toEqual(['db-sync', 'exec', '--']);
    expect(wrapper!.command).toBe('${var.app_command}');
    expect(wrapper!.image).toBe('${var.app_image}');
    expect(app!.image).toBe('${var.app_image}');
  });

  it('sends every container log to the module log group', () => {
    const group = resource(m, 'aws_cloudwatch_log_group', 'this');
    expect(group.retention_in_days).toBe('${var.log_retention_days}');
    for (const c of [...sidecarContainers, ...wrapperContainers]) {
      const logs = asObject(resolve(m, c.logConfiguration), 'logConfiguration');
      expect(logs.logDriver).toBe('awslogs');
      expect(asObject(logs.options, 'options')['awslogs-group']).toBe('${aws_cloudwatch_log_group.this.name}');
    }
  });
});

describe('examples/complete', () => {
  const m = loadModule('examples/complete');

  it('wires the bucket into the task and runs one writer at a time', () => {
    expect(m.modules.bucket?.source).toBe('../../modules/bucket');
    expect(m.modules.task?.source).toBe('../../modules/ecs-task');
    expect(m.modules.task?.bucket_arn).toBe('${module.bucket.bucket_arn}');
    expect(m.modules.task?.db_key).toBe('${local.db_key}');
    expect(m.modules.bucket?.db_keys).toEqual(['${local.db_key}']);
    expect(Object.values(m.modules).some((call) => call.source === '../../modules/iam-policy')).toBe(true);
    const service = resource(m, 'aws_ecs_service', 'this');
    expect(service.task_definition).toBe('${module.task.task_definition_arn}');
    expect(service.desired_count).toBe(1);
    expect(service.deployment_maximum_percent).toBe(100);
    expect(service.deployment_minimum_healthy_percent).toBe(0);
  });

  it('alarms on the age of the last successful sync, with the metric db-sync writes, missing data as breaching', () => {
    const alarm = resource(m, 'aws_cloudwatch_metric_alarm', 'sync_age');
    expect(alarm.metric_name).toBe(EMF_METRICS.lastSuccessfulSyncAge.name);
    expect(alarm.namespace).toBe('${module.task.metric_namespace}');
    expect(alarm.dimensions).toBe('${module.task.metric_dimensions}');
    expect(alarm.statistic).toBe('Maximum');
    expect(alarm.comparison_operator).toBe('GreaterThanThreshold');
    expect(alarm.treat_missing_data).toBe('breaching');
    // Three intervals of the example's 5-minute sync interval.
    expect(m.modules.task?.sync_interval).toBe('5m');
    expect(alarm.threshold).toBe(900);
    expect(Number(alarm.period) * Number(alarm.evaluation_periods)).toBeGreaterThanOrEqual(900);
  });
});
