import { type ParseArgsConfig, parseArgs } from 'node:util';
import { ShaleError } from '@shale/common';

/**
 * A small command tree: every node answers --help, leaves parse their options strictly
 * (an unknown or malformed option is an error, never ignored).
 */
export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly description: string;
  /** May be given several times; the value is then a list. */
  readonly multiple?: boolean;
  readonly valueName?: string;
  readonly default?: string;
}

export interface Command {
  readonly name: string;
  readonly summary: string;
  /** Leaves: options and the action. */
  readonly options?: Readonly<Record<string, OptionSpec>>;
  readonly usage?: string;
  readonly details?: string;
  readonly run?: (values: Readonly<OptionValues>, positionals: string[]) => Promise<number>;
  /** Inner nodes: sub-commands. */
  readonly subcommands?: readonly Command[];
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export class UsageError extends ShaleError {
  constructor(message: string) {
    super('CLI_USAGE', message);
  }
}

export async function dispatch(
  root: Command,
  argv: readonly string[],
  out: NodeJS.WritableStream,
): Promise<number> {
  const path: Command[] = [root];
  let rest = [...argv];
  for (;;) {
    const current = path.at(-1) as Command;
    const next = rest[0];
    if (current.subcommands === undefined) break;
    if (next === undefined || next === '--help' || next === '-h' || next === 'help') {
      out.write(helpText(path));
      return next === undefined ? EXIT_USAGE : EXIT_OK;
    }
    const sub = current.subcommands.find((command) => command.name === next);
    if (sub === undefined) {
      throw new UsageError(
        `unknown command "${path.map((c) => c.name).join(' ')} ${next}"; see "${path.map((c) => c.name).join(' ')} --help"`,
      );
    }
    path.push(sub);
    rest = rest.slice(1);
  }
  const leaf = path.at(-1) as Command;
  if (rest.includes('--help') || rest.includes('-h')) {
    out.write(helpText(path));
    return EXIT_OK;
  }
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const [name, spec] of Object.entries(leaf.options ?? {})) {
    options[name] = {
      type: spec.type,
      ...(spec.multiple === true ? { multiple: true } : {}),
      ...(spec.default === undefined ? {} : { default: spec.default }),
    };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: rest, options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError(
      `${(err as Error).message}; see "${path.map((c) => c.name).join(' ')} --help"`,
    );
  }
  if (leaf.run === undefined)
    throw new UsageError(`"${path.map((c) => c.name).join(' ')}" does nothing by itself`);
  return leaf.run(parsed.values as OptionValues, parsed.positionals);
}

export function helpText(path: readonly Command[]): string {
  const command = path.at(-1) as Command;
  const fullName = path.map((c) => c.name).join(' ');
  const lines = [`${fullName}: ${command.summary}`, ''];
  if (command.subcommands !== undefined) {
    lines.push(`Usage: ${fullName} <command> [options]`, '', 'Commands:');
    const width = Math.max(...command.subcommands.map((c) => c.name.length));
    for (const sub of command.subcommands)
      lines.push(`  ${sub.name.padEnd(width)}  ${sub.summary}`);
    lines.push('', `Run "${fullName} <command> --help" for the options of each.`);
  } else {
    lines.push(`Usage: ${command.usage ?? `${fullName} [options]`}`);
    const entries = Object.entries(command.options ?? {});
    if (entries.length > 0) {
      lines.push('', 'Options:');
      const labels = entries.map(
        ([name, spec]) =>
          `--${name}${spec.type === 'string' ? ` ${spec.valueName ?? 'VALUE'}` : ''}`,
      );
      const width = Math.max(...labels.map((label) => label.length));
      entries.forEach(([, spec], index) => {
        const repeat = spec.multiple === true ? ' (repeatable)' : '';
        const suffix = spec.default === undefined ? repeat : `${repeat} (default: ${spec.default})`;
        lines.push(`  ${(labels[index] as string).padEnd(width)}  ${spec.description}${suffix}`);
      });
    }
    if (command.details !== undefined) lines.push('', command.details);
  }
  return `${lines.join('\n')}\n`;
}

export function requireString(values: Readonly<OptionValues>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value.length === 0)
    throw new UsageError(`--${name} is required`);
  return value;
}

/** The one positional argument a verb takes (its `what`), or a UsageError naming the usage. */
export function onePositional(positionals: readonly string[], what: string, usage: string): string {
  const value = positionals[0];
  if (value === undefined || value.length === 0)
    throw new UsageError(`${what} is required: ${usage}`);
  if (positionals.length > 1)
    throw new UsageError(`unexpected argument "${positionals[1]}": ${usage}`);
  return value;
}

export function optionalString(values: Readonly<OptionValues>, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

export function stringList(values: Readonly<OptionValues>, name: string): string[] {
  const value = values[name];
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [String(value)];
}

export function parsePort(text: string, name: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`--${name} must be a port number 0..65535, not "${text}"`);
  }
  return port;
}
