import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CpuUsage } from './cpu-meter.js';
import type { Expectation, Metric } from './expected.js';
import type { CaseMeasurement } from './latency-recorder.js';

export interface CaseResult {
  readonly name: string;
  readonly description: string;
  readonly objectSizeBytes: number;
  readonly queueDepth: number;
  /** Which field the ratio compares: throughputMiBps or opsPerSec. */
  readonly metric: Metric;
  readonly shale: CaseMeasurement;
  readonly fio: CaseMeasurement;
  readonly shaleCpu: CpuUsage;
  readonly fioCpu: CpuUsage;
  readonly shaleToFioRatio: number;
  readonly expected: {
    readonly shale: Partial<Record<Metric, number>>;
    readonly fio: Partial<Record<Metric, number>>;
    readonly shaleToFioRatio: number;
    readonly why: string;
  };
  readonly fioCommand: string;
}

export interface RunResults {
  readonly benchmark: 'asd';
  readonly startedAtIso: string;
  readonly finishedAtIso: string;
  readonly gitCommit: string;
  readonly gitDirty: boolean;
  readonly nodeVersion: string;
  readonly fioVersion: string;
  readonly quick: boolean;
  readonly caseDurationMs: number;
  readonly host: {
    readonly cpuCount: number;
    readonly cpuModel: string;
    readonly memoryBytes: number;
    readonly kernel: string;
    readonly loadAvg1mAtStart: number;
    readonly loadAvg1mAtEnd: number;
  };
  readonly scratch: { readonly path: string; readonly fsType: string };
  readonly cases: readonly CaseResult[];
}

export function makeCaseResult(init: {
  name: string;
  description: string;
  objectSizeBytes: number;
  queueDepth: number;
  shale: CaseMeasurement;
  fio: CaseMeasurement;
  shaleCpu: CpuUsage;
  fioCpu: CpuUsage;
  expectation: Expectation;
  fioCommand: string;
}): CaseResult {
  const { metric } = init.expectation;
  return {
    name: init.name,
    description: init.description,
    objectSizeBytes: init.objectSizeBytes,
    queueDepth: init.queueDepth,
    metric,
    shale: init.shale,
    fio: init.fio,
    shaleCpu: init.shaleCpu,
    fioCpu: init.fioCpu,
    shaleToFioRatio: ratio(init.shale[metric], init.fio[metric]),
    expected: {
      shale: { [metric]: init.expectation.shale },
      fio: { [metric]: init.expectation.fio },
      shaleToFioRatio: ratio(init.expectation.shale, init.expectation.fio),
      why: init.expectation.why,
    },
    fioCommand: init.fioCommand,
  };
}

function ratio(shale: number, fio: number): number {
  // Three significant digits: the ranged-get ratios are around 0.001.
  return fio === 0 ? 0 : Number((shale / fio).toPrecision(3));
}

export async function writeResults(filePath: string, results: RunResults): Promise<void> {
  await mkdir(path.dirname(filePath), { recursive: true });
  await writeFile(filePath, `${JSON.stringify(results, null, 2)}\n`);
}

const UNIT: Record<Metric, string> = { throughputMiBps: 'MiB/s', opsPerSec: 'IOPS' };

function formatNumber(value: number): string {
  if (value >= 100) return Math.round(value).toLocaleString('en-US');
  return value.toFixed(1);
}

function latency(measurement: CaseMeasurement): string {
  if (measurement.latencyUsP50 === null || measurement.latencyUsP99 === null) return '-';
  return `${formatNumber(measurement.latencyUsP50)} / ${formatNumber(measurement.latencyUsP99)}`;
}

function cpuPerOp(cpu: CpuUsage): string {
  return cpu.cpuUsPerOp === null ? '-' : formatNumber(cpu.cpuUsPerOp);
}

function percent(value: number | null): string {
  return value === null ? '-' : value.toFixed(0);
}

/** The markdown table for benchmarks/README.md and the run's summary. */
export function markdownTable(results: RunResults): string {
  const lines = [
    '| case | QD | Shale | fio | Shale/fio | expected Shale (ratio) | Shale p50 / p99 us | fio p50 / p99 us | CPU us/op Shale / fio | other load % Shale / fio |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const result of results.cases) {
    const unit = UNIT[result.metric];
    const expectedShale = result.expected.shale[result.metric] ?? 0;
    lines.push(
      `| ${result.description} | ${result.queueDepth} | ${formatNumber(result.shale[result.metric])} ${unit} | ${formatNumber(result.fio[result.metric])} ${unit} | ${result.shaleToFioRatio.toPrecision(2)} | ${formatNumber(expectedShale)} ${unit} (${result.expected.shaleToFioRatio.toPrecision(2)}) | ${latency(result.shale)} | ${latency(result.fio)} | ${cpuPerOp(result.shaleCpu)} / ${cpuPerOp(result.fioCpu)} | ${percent(result.shaleCpu.otherCpuPercent)} / ${percent(result.fioCpu.otherCpuPercent)} |`,
    );
  }
  return lines.join('\n');
}
