/**
 * A small subset of JSON Schema (2020-12, as OpenAPI 3.1 uses it): the schema objects the
 * API validates requests and answers with are the very objects the OpenAPI document is
 * generated from, so the document cannot drift from what the server checks.
 *
 * Keywords: type (string, integer, number, boolean, array, object), properties, required,
 * additionalProperties (false only), pattern, minimum, maximum, exclusiveMinimum,
 * minLength, maxLength, enum (strings), items, maxItems, anyOf, description; `$ref` appears
 * only in the generated document (see toJsonSchema) and is resolved by parseSchema.
 *
 * The builders (`s.string()`, `s.object()`, ...) keep the TypeScript type of what a schema
 * accepts, so `Infer<typeof schema>` is the type handlers and the client work with.
 */

export interface StringSchema<E extends string = string> {
  readonly type: 'string';
  readonly description?: string;
  /** An ECMAScript regular expression (unicode mode), anchored by the pattern itself. */
  readonly pattern?: string;
  /** In code points, as JSON Schema counts. */
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly enum?: readonly E[];
}

export interface IntegerSchema {
  readonly type: 'integer';
  readonly description?: string;
  readonly minimum?: number;
  readonly maximum?: number;
}

export interface NumberSchema {
  readonly type: 'number';
  readonly description?: string;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly exclusiveMinimum?: number;
}

export interface BooleanSchema {
  readonly type: 'boolean';
  readonly description?: string;
}

export interface ArraySchema<I = unknown> {
  readonly type: 'array';
  readonly description?: string;
  readonly items: I;
  readonly maxItems?: number;
}

export type Properties = { readonly [name: string]: Schema };

export interface ObjectSchema<P = Properties, R extends string = string> {
  readonly type: 'object';
  readonly description?: string;
  readonly properties: P;
  readonly required: readonly R[];
  /** false: unknown fields are refused. Absent: allowed (free-form answers only). */
  readonly additionalProperties?: false;
}

export interface AnyOfSchema<A = readonly unknown[]> {
  readonly description?: string;
  readonly anyOf: A;
}

export type Schema =
  | StringSchema
  | IntegerSchema
  | NumberSchema
  | BooleanSchema
  | ArraySchema<Schema>
  | ObjectSchema<Properties, string>
  | AnyOfSchema<readonly Schema[]>;

type Simplify<T> = { [K in keyof T]: T[K] } & unknown;

/** The TypeScript type of the values a schema accepts. */
export type Infer<S> =
  S extends StringSchema<infer E extends string>
    ? E
    : S extends IntegerSchema | NumberSchema
      ? number
      : S extends BooleanSchema
        ? boolean
        : S extends ArraySchema<infer I>
          ? Infer<I>[]
          : S extends ObjectSchema<infer P, infer R>
            ? Simplify<
                { [K in keyof P & R]: Infer<P[K]> } & {
                  [K in Exclude<keyof P, R>]?: Infer<P[K]>;
                }
              >
            : S extends AnyOfSchema<infer A extends readonly unknown[]>
              ? Infer<A[number]>
              : never;

type Options<T> = Omit<T, 'type'>;

/** Schema builders; each returns a plain JSON Schema object. */
export const s = {
  string<const E extends string = string>(options: Options<StringSchema<E>> = {}): StringSchema<E> {
    return { type: 'string', ...options };
  },
  integer(options: Options<IntegerSchema> = {}): IntegerSchema {
    return { type: 'integer', ...options };
  },
  number(options: Options<NumberSchema> = {}): NumberSchema {
    return { type: 'number', ...options };
  },
  boolean(options: Options<BooleanSchema> = {}): BooleanSchema {
    return { type: 'boolean', ...options };
  },
  array<I extends Schema>(items: I, options: Omit<ArraySchema<I>, 'type' | 'items'> = {}) {
    const schema: ArraySchema<I> = { type: 'array', ...options, items };
    return schema;
  },
  /** An object with `required` fields and `optional` ones; unknown fields are refused. */
  object<Req extends Properties, Opt extends Properties = Record<never, never>>(
    required: Req,
    optional?: Opt,
    options: { description?: string; open?: boolean } = {},
  ): ObjectSchema<Req & Opt, keyof Req & string> {
    return {
      type: 'object',
      ...(options.description === undefined ? {} : { description: options.description }),
      properties: { ...required, ...(optional ?? {}) } as Req & Opt,
      required: Object.keys(required) as (keyof Req & string)[],
      ...(options.open === true ? {} : { additionalProperties: false as const }),
    };
  },
  /**
   * `base` with more optional fields, for an answer that is a resource plus something about
   * it: fields added to `base` later are in it too.
   */
  extend<P extends Properties, R extends string, Opt extends Properties>(
    base: ObjectSchema<P, R>,
    optional: Opt,
    options: { description?: string } = {},
  ): ObjectSchema<P & Opt, R> {
    return {
      type: 'object',
      ...(options.description === undefined ? {} : { description: options.description }),
      properties: { ...base.properties, ...optional },
      required: [...base.required],
      ...(base.additionalProperties === false ? { additionalProperties: false as const } : {}),
    };
  },
  anyOf<const A extends readonly Schema[]>(alternatives: A, description?: string): AnyOfSchema<A> {
    return { ...(description === undefined ? {} : { description }), anyOf: alternatives };
  },
};

/** Where a value breaks its schema: a path such as `body.sizeBytes` or `$.vdisks[2].name`. */
export interface SchemaViolation {
  readonly path: string;
  readonly message: string;
}

const patterns = new WeakMap<StringSchema, RegExp>();

function patternOf(schema: StringSchema, pattern: string): RegExp {
  let regexp = patterns.get(schema);
  if (regexp === undefined) {
    regexp = new RegExp(pattern, 'u');
    patterns.set(schema, regexp);
  }
  return regexp;
}

function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function kindOf(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a number';
  return `a ${typeof value}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkNumber(
  schema: IntegerSchema | NumberSchema,
  value: number,
  path: string,
): SchemaViolation | undefined {
  if (schema.minimum !== undefined && value < schema.minimum)
    return { path, message: `must be at least ${schema.minimum}, got ${value}` };
  if (schema.maximum !== undefined && value > schema.maximum)
    return { path, message: `must be at most ${schema.maximum}, got ${value}` };
  if (
    schema.type === 'number' &&
    schema.exclusiveMinimum !== undefined &&
    value <= schema.exclusiveMinimum
  )
    return { path, message: `must be above ${schema.exclusiveMinimum}, got ${value}` };
  return undefined;
}

/** The first place where `value` breaks `schema`, or undefined when it conforms. */
export function validate(schema: Schema, value: unknown, path = '$'): SchemaViolation | undefined {
  if ('anyOf' in schema) {
    const failures: SchemaViolation[] = [];
    for (const alternative of schema.anyOf) {
      const failure = validate(alternative, value, path);
      if (failure === undefined) return undefined;
      failures.push(failure);
    }
    // The alternative that got deepest before failing is the most likely intended one.
    const best = failures.reduce<SchemaViolation | undefined>(
      (a, b) => (a === undefined || b.path.length > a.path.length ? b : a),
      undefined,
    );
    return {
      path: best?.path ?? path,
      message: `matches none of ${schema.anyOf.length} alternatives (closest: ${best?.message ?? '-'})`,
    };
  }
  switch (schema.type) {
    case 'string': {
      if (typeof value !== 'string')
        return { path, message: `must be a string, got ${kindOf(value)}` };
      if (schema.enum !== undefined && !schema.enum.includes(value)) {
        return {
          path,
          message: `must be one of ${schema.enum.map((e) => `'${e}'`).join(', ')}, got ${shown(value)}`,
        };
      }
      const length =
        schema.minLength === undefined && schema.maxLength === undefined ? 0 : [...value].length;
      if (schema.minLength !== undefined && length < schema.minLength)
        return { path, message: `must be at least ${schema.minLength} characters` };
      if (schema.maxLength !== undefined && length > schema.maxLength)
        return { path, message: `must be at most ${schema.maxLength} characters` };
      if (schema.pattern !== undefined && !patternOf(schema, schema.pattern).test(value)) {
        return { path, message: `must match ${schema.pattern}, got ${shown(value)}` };
      }
      return undefined;
    }
    case 'integer':
      if (typeof value !== 'number' || !Number.isSafeInteger(value))
        return {
          path,
          message: `must be an integer, got ${typeof value === 'number' ? value : kindOf(value)}`,
        };
      return checkNumber(schema, value, path);
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value))
        return { path, message: `must be a number, got ${kindOf(value)}` };
      return checkNumber(schema, value, path);
    case 'boolean':
      return typeof value === 'boolean'
        ? undefined
        : { path, message: `must be true or false, got ${kindOf(value)}` };
    case 'array': {
      if (!Array.isArray(value)) return { path, message: `must be an array, got ${kindOf(value)}` };
      if (schema.maxItems !== undefined && value.length > schema.maxItems)
        return { path, message: `must have at most ${schema.maxItems} items, got ${value.length}` };
      for (let i = 0; i < value.length; i++) {
        const failure = validate(schema.items, value[i], `${path}[${i}]`);
        if (failure !== undefined) return failure;
      }
      return undefined;
    }
    case 'object': {
      if (!isPlainObject(value))
        return { path, message: `must be an object, got ${kindOf(value)}` };
      for (const name of schema.required) {
        if (!Object.hasOwn(value, name)) return { path: `${path}.${name}`, message: 'is required' };
      }
      for (const [name, field] of Object.entries(value)) {
        const fieldSchema = Object.hasOwn(schema.properties, name)
          ? schema.properties[name]
          : undefined;
        if (fieldSchema === undefined) {
          if (schema.additionalProperties === false)
            return { path: `${path}.${name}`, message: 'is not a known field' };
          continue;
        }
        const failure = validate(fieldSchema, field, `${path}.${name}`);
        if (failure !== undefined) return failure;
      }
      return undefined;
    }
  }
}

/** A JSON value, for documents built from schemas. */
export type JsonValue =
  | string
  | number
  | boolean
  | null
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

/**
 * The schema as a JSON Schema value for a document: every sub-schema that is one of the
 * `named` objects (by identity) becomes `{$ref: '#/components/schemas/<name>'}`, except
 * the schema itself at the top (that is the component's own definition).
 */
export function toJsonSchema(
  schema: Schema,
  named: ReadonlyMap<Schema, string>,
  top = true,
): JsonValue {
  const name = named.get(schema);
  if (!top && name !== undefined) return { $ref: `#/components/schemas/${name}` };
  const out: Record<string, JsonValue> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (value === undefined) continue;
    if (key === 'items') out[key] = toJsonSchema(value as Schema, named, false);
    else if (key === 'anyOf')
      out[key] = (value as readonly Schema[]).map((item) => toJsonSchema(item, named, false));
    else if (key === 'properties') {
      const properties: Record<string, JsonValue> = {};
      for (const [field, fieldSchema] of Object.entries(value as Properties))
        properties[field] = toJsonSchema(fieldSchema, named, false);
      out[key] = properties;
    } else out[key] = value as JsonValue;
  }
  return out;
}

const KEYWORDS: Readonly<Record<string, readonly string[]>> = {
  string: ['type', 'description', 'pattern', 'minLength', 'maxLength', 'enum'],
  integer: ['type', 'description', 'minimum', 'maximum'],
  number: ['type', 'description', 'minimum', 'maximum', 'exclusiveMinimum'],
  boolean: ['type', 'description'],
  array: ['type', 'description', 'items', 'maxItems'],
  object: ['type', 'description', 'properties', 'required', 'additionalProperties'],
  anyOf: ['description', 'anyOf'],
};

function schemaError(path: string, message: string): Error {
  return new Error(`schema at ${path}: ${message}`);
}

/**
 * Reads a JSON Schema value (as found in a served OpenAPI document) back into a Schema,
 * resolving `$ref`s with `resolve`. Throws on anything outside the subset above, so a
 * document that uses a keyword this validator does not know is caught, not ignored.
 */
export function parseSchema(
  json: unknown,
  resolve: (ref: string) => unknown,
  path = '$',
  depth = 0,
): Schema {
  if (depth > 32) throw schemaError(path, 'nested too deeply (a $ref cycle?)');
  if (!isPlainObject(json)) throw schemaError(path, 'not an object');
  if (typeof json.$ref === 'string') {
    if (Object.keys(json).length !== 1) throw schemaError(path, '$ref with siblings');
    return parseSchema(resolve(json.$ref), resolve, `${path}->${json.$ref}`, depth + 1);
  }
  const kind = 'anyOf' in json ? 'anyOf' : json.type;
  if (typeof kind !== 'string' || !Object.hasOwn(KEYWORDS, kind))
    throw schemaError(path, `unknown type ${shown(json.type)}`);
  const allowed = KEYWORDS[kind] ?? [];
  for (const key of Object.keys(json)) {
    if (!allowed.includes(key)) throw schemaError(path, `keyword ${key} is outside the subset`);
  }
  const out: Record<string, unknown> = { ...json };
  if (kind === 'anyOf') {
    if (!Array.isArray(json.anyOf)) throw schemaError(path, 'anyOf must be a list');
    out.anyOf = json.anyOf.map((item, i) =>
      parseSchema(item, resolve, `${path}.anyOf[${i}]`, depth + 1),
    );
  } else if (kind === 'array') {
    out.items = parseSchema(json.items, resolve, `${path}.items`, depth + 1);
  } else if (kind === 'object') {
    if (!isPlainObject(json.properties)) throw schemaError(path, 'properties must be an object');
    if (!Array.isArray(json.required) || !json.required.every((r) => typeof r === 'string'))
      throw schemaError(path, 'required must be a list of names');
    if (json.additionalProperties !== undefined && json.additionalProperties !== false)
      throw schemaError(path, 'additionalProperties may only be false');
    const properties: Record<string, Schema> = {};
    for (const [field, fieldSchema] of Object.entries(json.properties))
      properties[field] = parseSchema(
        fieldSchema,
        resolve,
        `${path}.properties.${field}`,
        depth + 1,
      );
    out.properties = properties;
  }
  return out as unknown as Schema;
}
