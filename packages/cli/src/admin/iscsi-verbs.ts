/**
 * `shale iscsi create | list | show | delete`: iSCSI targets through the framework API
 * (`/api/v1/iscsi-targets`). `shale iscsi serve` (iscsi/serve-command.ts) turns the stored
 * targets into tgtd's. CHAP secrets are read from files, never from the command line
 * (argv is visible to every user of the host in ps and /proc), and are never printed.
 */
import fs from 'node:fs/promises';
import { ShaleError } from '@shale/common';
import type { CreateIscsiTargetBody, IscsiTarget } from '@shale/framework-api';
import {
  type Command,
  EXIT_OK,
  type OptionValues,
  onePositional,
  optionalString,
  stringList,
  UsageError,
} from '../command.js';
import { API_OPTIONS, apiClient } from './api-target.js';
import { printFields, printJson, printTable, runVerb, time } from './output.js';

const asJson = (values: Readonly<OptionValues>): boolean => values.json === true;

/** A secret file's content without its final line end (the rest is checked by the API). */
async function readSecretFile(file: string, option: string): Promise<string> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new ShaleError('CLI_SECRET_FILE', `--${option} ${file}: cannot read it`, { cause: err });
  }
  return text.replace(/\r?\n$/, '');
}

/** --X-user with --X-secret-file, both or neither. */
async function account(
  values: Readonly<OptionValues>,
  prefix: 'chap' | 'mutual',
): Promise<{ user: string; secret: string } | undefined> {
  const user = optionalString(values, `${prefix}-user`);
  const file = optionalString(values, `${prefix}-secret-file`);
  if (user === undefined && file === undefined) return undefined;
  if (user === undefined || file === undefined) {
    throw new UsageError(`--${prefix}-user and --${prefix}-secret-file go together`);
  }
  return { user, secret: await readSecretFile(file, `${prefix}-secret-file`) };
}

function targetFields(target: IscsiTarget): [string, string][] {
  return [
    ['iqn', target.iqn],
    ['vdisk', target.vdisk],
    ['initiators', target.initiators.join(', ') || '- (nobody may log in)'],
    ['chap user', target.chapUser ?? '-'],
    ['mutual user', target.mutualUser ?? '-'],
    ['read-only', target.readOnly ? 'yes' : 'no'],
    ['created', time(target.createdAtMs)],
  ];
}

const create: Command = {
  name: 'create',
  summary: 'export a vDisk as an iSCSI target (shale iscsi serve puts it in tgtd)',
  usage:
    'shale iscsi create VDISK [--iqn IQN] [--initiator ADDR|NET|ALL|IQN]... [--chap-user U --chap-secret-file F] [--mutual-user U --mutual-secret-file F] [--read-only] [--json]',
  options: {
    iqn: {
      type: 'string',
      valueName: 'IQN',
      description: "the target's name (default: iqn.2026-12.io.shale:<vdisk>)",
    },
    initiator: {
      type: 'string',
      multiple: true,
      valueName: 'ADDR|NET|ALL|IQN',
      description:
        'who may log in: an address, a network ADDR/PREFIX, ALL, or an initiator IQN (none: nobody)',
    },
    'chap-user': { type: 'string', valueName: 'USER', description: 'incoming CHAP user' },
    'chap-secret-file': {
      type: 'string',
      valueName: 'FILE',
      description: 'file holding its secret (12..255 printable ASCII; a final newline is dropped)',
    },
    'mutual-user': {
      type: 'string',
      valueName: 'USER',
      description: 'mutual CHAP user (the target proves itself back; needs --chap-user)',
    },
    'mutual-secret-file': {
      type: 'string',
      valueName: 'FILE',
      description: 'file holding its secret (must differ from the incoming one)',
    },
    'read-only': { type: 'boolean', description: 'the LUN refuses writes' },
    ...API_OPTIONS,
  },
  details: 'Secrets are read from files, never from the command line, and are never shown again.',
  run: (values, positionals) =>
    runVerb(async () => {
      const vdisk = onePositional(positionals, 'VDISK', create.usage as string);
      const chap = await account(values, 'chap');
      const mutual = await account(values, 'mutual');
      const iqn = optionalString(values, 'iqn');
      const initiators = stringList(values, 'initiator');
      const body: CreateIscsiTargetBody = {
        vdisk,
        ...(iqn === undefined ? {} : { iqn }),
        ...(initiators.length === 0 ? {} : { initiators }),
        ...(chap === undefined ? {} : { chap }),
        ...(mutual === undefined ? {} : { mutual }),
        ...(values['read-only'] === true ? { readOnly: true } : {}),
      };
      const target = await (await apiClient(values)).createIscsiTarget(body);
      if (asJson(values)) printJson(target);
      else {
        process.stdout.write(`created iSCSI target ${target.iqn} for vDisk ${target.vdisk}\n`);
        if (target.initiators.length === 0) {
          process.stderr.write(
            'shale: warning: no --initiator: nobody may log in until the target is made again with one\n',
          );
        }
      }
      return EXIT_OK;
    }),
};

const list: Command = {
  name: 'list',
  summary: 'list every iSCSI target',
  usage: 'shale iscsi list [--json]',
  options: { ...API_OPTIONS },
  run: (values, positionals) =>
    runVerb(async () => {
      if (positionals.length > 0)
        throw new UsageError(`unexpected argument "${positionals[0]}": ${list.usage}`);
      const targets = await (await apiClient(values)).listIscsiTargets();
      if (asJson(values)) printJson(targets);
      else
        printTable(
          ['IQN', 'VDISK', 'INITIATORS', 'CHAP', 'MUTUAL', 'RO'],
          targets.map((t) => [
            t.iqn,
            t.vdisk,
            t.initiators.join(',') || '-',
            t.chapUser ?? '-',
            t.mutualUser ?? '-',
            t.readOnly ? 'yes' : 'no',
          ]),
        );
      return EXIT_OK;
    }),
};

const show: Command = {
  name: 'show',
  summary: 'show one iSCSI target (never its secrets)',
  usage: 'shale iscsi show IQN [--json]',
  options: { ...API_OPTIONS },
  run: (values, positionals) =>
    runVerb(async () => {
      const iqn = onePositional(positionals, 'IQN', show.usage as string);
      const target = await (await apiClient(values)).getIscsiTarget(iqn);
      if (asJson(values)) printJson(target);
      else printFields(targetFields(target));
      return EXIT_OK;
    }),
};

const remove: Command = {
  name: 'delete',
  summary: 'stop exporting a vDisk (the vDisk stays; shale iscsi serve drops the target)',
  usage: 'shale iscsi delete IQN [--json]',
  options: { ...API_OPTIONS },
  run: (values, positionals) =>
    runVerb(async () => {
      const iqn = onePositional(positionals, 'IQN', remove.usage as string);
      await (await apiClient(values)).deleteIscsiTarget(iqn);
      if (asJson(values)) printJson({ deleted: iqn });
      else process.stdout.write(`deleted iSCSI target ${iqn}\n`);
      return EXIT_OK;
    }),
};

/** The verbs that go through the API; root.ts puts them beside `serve`. */
export const iscsiApiVerbs: readonly Command[] = [create, list, show, remove];
