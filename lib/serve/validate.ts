// Checks of JSON request bodies: each failure is a 400 naming the field, before any work starts.
import { badRequest } from './errors.js';

export type Body = Record<string, unknown>;

export function objectBody(body: unknown): Body {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object');
  return body as Body;
}

export function str(body: Body, name: string, fallback?: string): string {
  const v = body[name] ?? fallback;
  if (typeof v !== 'string') throw badRequest(`'${name}' must be a string`);
  return v;
}

export function optStr(body: Body, name: string): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw badRequest(`'${name}' must be a string`);
  return v;
}

/** A string or a non-empty array of strings, as an array (and whether it was a single string). */
export function texts(body: Body, name: string): { list: string[]; single: boolean } {
  const v = body[name];
  if (typeof v === 'string') return { list: [v], single: true };
  if (!Array.isArray(v) || v.length === 0) throw badRequest(`'${name}' must be a string or a non-empty array of strings`);
  const bad = v.findIndex((t) => typeof t !== 'string');
  if (bad >= 0) throw badRequest(`'${name}[${bad}]' must be a string`);
  return { list: v as string[], single: false };
}

export function bool(body: Body, name: string, fallback: boolean): boolean {
  const v = body[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw badRequest(`'${name}' must be true or false`);
  return v;
}

export function int(body: Body, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = body[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw badRequest(`'${name}' must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return v;
}

export function num(body: Body, name: string, fallback: number, min: number, max: number): number {
  const v = body[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw badRequest(`'${name}' must be a number in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return v;
}

/** TEI's truncation_direction: only 'right' is implemented (the engine cuts the end). */
export function rightTruncation(body: Body): void {
  const v = body.truncation_direction;
  if (v !== undefined && v !== null && (typeof v !== 'string' || v.toLowerCase() !== 'right')) {
    throw badRequest(`'truncation_direction' must be 'right' (the only direction implemented)`);
  }
}
