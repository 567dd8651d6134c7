// Members exported by one block of a namespace are in scope, unqualified, in its other blocks.
const out: unknown[] = [];
const label = "module-level label";
namespace Shop {
  export const label = "shop label";
  export function who(this: unknown) {
    return this === undefined ? "called unbound" : "called on the namespace";
  }
  export class Item {
    constructor(public name: string) {}
  }
  export enum Size { Small = 1, Large }
  export const enum Fixed { Ten = 10 }
  export namespace Deep {
    export const depth = 3;
  }
  export const tag = (s: TemplateStringsArray, ...v: unknown[]) => s.raw.join(String(v.length));
  export const later = () => forward;
}
namespace Shop {
  out.push(label, who(), new Item("pen").name, Size.Large, Fixed.Ten, Deep.depth, tag`a${1}b`);
  out.push({ label }.label, typeof Item, [Size.Small].map(String));
  function own(label: string) {
    return label;
  }
  out.push(own("parameter wins"));
  {
    const Item = "block-local Item";
    out.push(Item);
  }
  try {
    throw new Error("caught");
  } catch (who) {
    out.push((who as Error).message);
  }
}
namespace Shop {
  export const forward = "forward reference";
  out.push(later());
}
namespace Shop.Aisle {
  export const shelf = "shelf 1";
}
namespace Shop {
  export namespace Aisle {
    export const both = `${shelf} and ${label}`;
  }
  namespace Local {
    export const secret = "local 1";
  }
  namespace Local {
    out.push(secret);
  }
}
namespace Shop.Aisle {
  out.push(both, shelf);
}
function greet() {
  return "hi";
}
namespace greet {
  export const whom = "you";
}
namespace greet {
  out.push(`${greet()} ${whom}`);
}
console.log(JSON.stringify(out));
console.log(Object.keys(Shop).sort().join(","), Object.keys(Shop.Aisle).join(","));
