namespace Geometry {
  export const unit = 1;
  export namespace Shapes {
    export class Square {
      constructor(public side: number) {}
      area() {
        return this.side * this.side * unit;
      }
    }
  }
  export function double(n: number) {
    return n * 2;
  }
  export type Point = { x: number; y: number };
}
namespace Geometry {
  export const origin: Point = { x: 0, y: 0 };
}
function greet(name: string) {
  return `${greet.prefix} ${name}`;
}
namespace greet {
  export const prefix = "Hello";
}
namespace Empty {
  export interface OnlyTypes {
    a: string;
  }
}
import Sq = Geometry.Shapes.Square;
console.log(new Sq(3).area(), Geometry.double(21), JSON.stringify(Geometry.origin));
console.log(greet("namespace"), typeof Empty);
