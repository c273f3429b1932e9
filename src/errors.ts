// One error type per domain. Each names the thing at fault (file, tensor, field) and, where it
// applies, what was expected and what was found. The CLI prints `message` alone for these.
export class TnlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}
/** A config.json field is missing, has the wrong type, or an unsupported value. */
export class ConfigError extends TnlError {}
/** A checkpoint, safetensors, pickle or tokenizer file is unreadable, truncated, hostile or inconsistent. */
export class FormatError extends TnlError {}
/** A tensor has the wrong shape or dtype for where it is used. */
export class ShapeError extends TnlError {}
/** The user asked for something invalid (flags, arguments, requests). */
export class UsageError extends TnlError {}

export function expectShape(what: string, got: readonly number[], expected: readonly number[]): void {
  if (got.length !== expected.length || got.some((d, i) => d !== expected[i]))
    throw new ShapeError(`${what}: expected shape [${expected.join(', ')}], got [${got.join(', ')}]`);
}
