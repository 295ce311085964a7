// Must NOT type-check: a number where the greeter takes a string. The test asserts that
// tsc rejects this file, so the generated types are not `any` in disguise.
import { call } from "./api";

export async function wrong(base: string): Promise<void> {
  await call(base, "/greeter/greet", { name: 5 });
}
