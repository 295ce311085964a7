// A web front end's calls through the gateway, typed by `meshrpc openapi --typescript > api.ts`.
// Checked by `tsc --strict` in the test suite (tests/tests/schemas.rs).
import { call, Methods, lab } from "./api";

export async function greetAndEcho(base: string): Promise<string> {
  const hello = await call(base, "/greeter/greet", { name: "Ada" });
  const greeting: string | null = hello.data;

  // Each service's types are in a namespace of its name.
  const shape: lab.Shape = { Poly: [[0, 0], [1, 2]] };
  const tree: lab.Nested = { label: "root", children: [], shape };
  const echoed = await call(base, "/lab/echo", { nested: tree });
  const label: string | undefined = echoed.data?.label;

  const refusal: Methods["/lab/refuse"]["error"] = { Refused: "no" };
  return `${greeting} ${label} ${JSON.stringify(refusal)}`;
}
