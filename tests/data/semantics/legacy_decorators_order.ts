// @decorators legacy
// experimentalDecorators: instance members first, then static members (each in source order,
// each member's decorators evaluated as it is decorated), then the class.
const log: string[] = [];
function d(name: string) {
  log.push(`evaluate ${name}`);
  return (target: any, key?: string, descriptor?: PropertyDescriptor) => {
    const on = typeof target === "function" ? "constructor" : "prototype";
    log.push(`apply ${name} to ${on}${key === undefined ? "" : `.${key}`}${descriptor ? " with descriptor" : ""}`);
  };
}
function p(name: string) {
  log.push(`evaluate ${name}`);
  return (_: any, key: string | undefined, index: number) => {
    log.push(`apply ${name} to parameter ${index} of ${String(key)}`);
  };
}
@d("class")
class Shelf {
  constructor(@p("shelf parameter") readonly size: number) {}
  @d("first") first = 1;
  @d("count") static count = 2;
  @d("label") label(@p("label parameter") prefix: string) {
    return `${prefix} ${this.size}`;
  }
  @d("make") static make() {
    return new Shelf(3);
  }
  @d("width") get width() {
    return this.first;
  }
  @d("depth") static set depth(_: number) {}
  @d("last") last = 7;
  @d("finally") static finally() {}
}
console.log(log.join("\n"));
console.log(Shelf.make().label("size"), Shelf.count);
