// @decorators legacy-metadata
// emitDecoratorMetadata, compared with tsc: a decorated class gets `design:paramtypes` (and no
// `design:type`); members get their annotated types.
const seen: string[] = [];
const name = (v: unknown) =>
  Array.isArray(v) ? `[${v.map(name).join(", ")}]` : typeof v === "function" ? v.name : String(v);
(Reflect as any).metadata = (key: string, value: unknown) => (target: any, member?: string) => {
  const on = member === undefined ? `class ${target.name}` : `${target.name || target.constructor.name}.${member}`;
  seen.push(`${on} ${key} = ${name(value)}`);
};
function mark(..._: unknown[]) {}
class Dependency {}
@mark
class Service {
  constructor(readonly dep: Dependency, readonly retries: number) {}
  @mark label: string = "service";
  @mark static instances: number = 0;
  @mark run(input: string, times: number): boolean {
    return input.length > times;
  }
  @mark get ready(): boolean {
    return true;
  }
}
@mark
class Plain {}
console.log(seen.join("\n"));
console.log(new Service(new Dependency(), 2).run("abc", 1), typeof Plain);
