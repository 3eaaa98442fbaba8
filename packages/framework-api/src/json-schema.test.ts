// Proves the JSON-Schema subset: each keyword accepts and refuses what it should and names the failing path, anyOf picks the closest alternative, named schemas become $refs, and a document read back with parseSchema is the same schema (unknown keywords refused).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type JsonValue, parseSchema, s, toJsonSchema, validate } from './json-schema.js';
import { NAMED_SCHEMAS, VdiskSchema } from './schemas.js';

const Item = s.object(
  { k: s.integer({ minimum: 1, maximum: 32 }) },
  { note: s.string({ maxLength: 3 }) },
);
const Root = s.object(
  {
    name: s.string({ pattern: '^[a-z]+$', minLength: 2 }),
    mode: s.string({ enum: ['fast', 'safe'] }),
    ratio: s.number({ exclusiveMinimum: 0, maximum: 1 }),
    flag: s.boolean(),
    items: s.array(Item, { maxItems: 2 }),
  },
  { choice: s.anyOf([s.integer(), Item]) },
);

const good = { name: 'ab', mode: 'fast', ratio: 0.5, flag: true, items: [{ k: 1 }] };

function failure(value: unknown): string | undefined {
  const found = validate(Root, value, 'body');
  return found === undefined ? undefined : `${found.path}: ${found.message}`;
}

test('each keyword refuses what it should, naming the path', () => {
  assert.equal(failure(good), undefined);
  assert.equal(failure({ ...good, choice: 3 }), undefined);
  assert.equal(failure({ ...good, choice: { k: 2 } }), undefined);
  const cases: [unknown, RegExp][] = [
    [null, /^body: must be an object, got null/],
    [[good], /^body: must be an object, got an array/],
    [{ mode: 'fast', ratio: 0.5, flag: true, items: [] }, /^body\.name: is required/],
    [{ ...good, extra: 1 }, /^body\.extra: is not a known field/],
    [{ ...good, name: 'a' }, /^body\.name: must be at least 2 characters/],
    [{ ...good, name: 'AB' }, /^body\.name: must match \^\[a-z\]\+\$/],
    [{ ...good, name: 7 }, /^body\.name: must be a string, got an integer/],
    [{ ...good, mode: 'slow' }, /^body\.mode: must be one of 'fast', 'safe'/],
    [{ ...good, ratio: 0 }, /^body\.ratio: must be above 0/],
    [{ ...good, ratio: 1.01 }, /^body\.ratio: must be at most 1/],
    [{ ...good, ratio: Number.NaN }, /^body\.ratio: must be a number/],
    [{ ...good, flag: 'true' }, /^body\.flag: must be true or false/],
    [{ ...good, items: {} }, /^body\.items: must be an array/],
    [{ ...good, items: [{ k: 1 }, { k: 2 }, { k: 3 }] }, /^body\.items: must have at most 2 items/],
    [{ ...good, items: [{ k: 1 }, { k: 0 }] }, /^body\.items\[1\]\.k: must be at least 1/],
    [{ ...good, items: [{ k: 33 }] }, /^body\.items\[0\]\.k: must be at most 32/],
    [{ ...good, items: [{ k: 1.5 }] }, /^body\.items\[0\]\.k: must be an integer, got 1\.5/],
    [{ ...good, items: [{ k: 2 ** 53 }] }, /^body\.items\[0\]\.k: must be an integer/],
    [{ ...good, items: [{ k: 1, note: 'long' }] }, /^body\.items\[0\]\.note: must be at most 3/],
    [
      { ...good, choice: { k: 99 } },
      /^body\.choice\.k: matches none of 2 alternatives \(closest: must be at most 32/,
    ],
    [{ ...good, choice: 'x' }, /^body\.choice: matches none of 2/],
  ];
  for (const [value, expected] of cases)
    assert.match(failure(value) ?? 'passed', expected, JSON.stringify(value));
});

test('lengths count code points, and __proto__ is just an unknown field', () => {
  const three = s.string({ maxLength: 3 });
  assert.equal(validate(three, '😀😀😀'), undefined);
  assert.ok(validate(three, '😀😀😀😀') !== undefined);
  const parsed = JSON.parse(
    `{"name":"ab","mode":"fast","ratio":0.5,"flag":true,"items":[],"__proto__":1}`,
  );
  assert.match(failure(parsed) ?? '', /^body\.__proto__: is not a known field/);
});

test('named schemas become $refs, and parseSchema reads a document back into the same schemas', () => {
  const named = new Map(Object.entries(NAMED_SCHEMAS).map(([name, schema]) => [schema, name]));
  const json = toJsonSchema(VdiskSchema, named, true) as { properties: Record<string, JsonValue> };
  assert.deepEqual(json.properties.snapshots, {
    type: 'array',
    items: { $ref: '#/components/schemas/Snapshot' },
  });
  assert.deepEqual(json.properties.stats, { $ref: '#/components/schemas/VdiskStats' });
  const components = Object.fromEntries(
    Object.entries(NAMED_SCHEMAS).map(([name, schema]) => [
      name,
      JSON.parse(JSON.stringify(toJsonSchema(schema, named, true))),
    ]),
  );
  const resolve = (ref: string): unknown => components[ref.replace('#/components/schemas/', '')];
  for (const [name, schema] of Object.entries(NAMED_SCHEMAS)) {
    assert.deepEqual(parseSchema(components[name], resolve), schema, name);
  }
  assert.throws(
    () => parseSchema({ type: 'string', format: 'email' }, resolve),
    /keyword format is outside the subset/,
  );
  assert.throws(
    () =>
      parseSchema(
        { type: 'object', properties: {}, required: [], additionalProperties: true },
        resolve,
      ),
    /additionalProperties may only be false/,
  );
  assert.throws(() => parseSchema({ type: 'null' }, resolve), /unknown type/);
  assert.throws(() => parseSchema({ $ref: '#/x', type: 'string' }, resolve), /\$ref with siblings/);
});
