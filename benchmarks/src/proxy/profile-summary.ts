/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`): self time per function, the top N,
 * and self time per package (grpc-js, protobufjs, shale packages, node internals, GC).
 *
 *   node benchmarks/dist/proxy/profile-summary.js FILE [--top N]
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
}
interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

const { values: args, positionals } = parseArgs({
  options: { top: { type: 'string' } },
  allowPositionals: true,
});
const file = positionals[0];
if (file === undefined) throw new Error('usage: profile-summary FILE [--top N]');
const top = Number(args.top ?? 25);
const profile = JSON.parse(await readFile(file, 'utf8')) as Profile;

const byId = new Map<number, ProfileNode>();
for (const node of profile.nodes) byId.set(node.id, node);
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => {
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
});

/** Which package a frame belongs to, by its URL. */
function packageOf(url: string, name: string): string {
  if (url === '') return name.startsWith('(') ? name : '(native)';
  const pnpm = /node_modules\/\.pnpm\/[^/]+\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pnpm !== null) return pnpm[1] as string;
  const shale = /packages\/([^/]+)\//.exec(url);
  if (shale !== null) return `@shale/${shale[1]}`;
  if (url.startsWith('node:')) return 'node internals';
  return url;
}

const perFunction = new Map<string, number>();
const perPackage = new Map<string, number>();
let totalUs = 0;
let idleUs = 0;
for (const [id, us] of selfUs) {
  const frame = (byId.get(id) as ProfileNode).callFrame;
  totalUs += us;
  if (frame.functionName === '(idle)') {
    idleUs += us;
    continue;
  }
  const where =
    frame.url === ''
      ? ''
      : ` ${frame.url.replace(/^.*\/(node_modules|packages)\//, '')}:${frame.lineNumber + 1}`;
  const key = `${frame.functionName || '(anonymous)'}${where}`;
  perFunction.set(key, (perFunction.get(key) ?? 0) + us);
  const pkg = packageOf(frame.url, frame.functionName);
  perPackage.set(pkg, (perPackage.get(pkg) ?? 0) + us);
}
const busyUs = totalUs - idleUs;
const pct = (us: number): string => `${((100 * us) / busyUs).toFixed(1).padStart(5)}%`;
process.stdout.write(
  `${file}: ${(busyUs / 1000).toFixed(0)} ms busy of ${(totalUs / 1000).toFixed(0)} ms sampled\n\nself time by package:\n`,
);
for (const [pkg, us] of [...perPackage].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
  process.stdout.write(`  ${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${pkg}\n`);
}
process.stdout.write(`\ntop ${top} functions by self time:\n`);
for (const [key, us] of [...perFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  process.stdout.write(`  ${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}\n`);
}
