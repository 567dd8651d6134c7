const log: string[] = [];
function logged(value: any, context: ClassMethodDecoratorContext | ClassDecoratorContext | ClassFieldDecoratorContext | ClassAccessorDecoratorContext) {
  log.push(`${context.kind}:${String(context.name)}`);
  if (context.kind === "method") {
    return function (this: unknown, ...args: unknown[]) {
      log.push(`call ${String(context.name)}(${args.join(",")})`);
      return value.apply(this, args);
    };
  }
  if (context.kind === "field") {
    return (initial: number) => initial * 10;
  }
}
function track(_: unknown, context: ClassAccessorDecoratorContext) {
  context.addInitializer(function () {
    log.push(`init ${String(context.name)}`);
  });
}
@logged
class Service {
  @logged field = 4;
  @track accessor hits = 0;
  @logged
  run(a: number, b: number) {
    this.hits++;
    return a + b + this.field;
  }
}
const s = new Service();
console.log(s.run(1, 2), s.hits);
console.log(log.join(" | "));
