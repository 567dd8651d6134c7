import { useState } from "react";

interface CounterProps {
  start?: number;
  step?: number;
}

enum Direction {
  Down = -1,
  Up = 1,
}

export function Counter({ start = 0, step = 1 }: CounterProps) {
  const [count, setCount] = useState(start);
  const move = (direction: Direction) => setCount((c) => c + direction * step);

  return (
    <div className="counter">
      <button onClick={() => move(Direction.Down)}>-</button>
      <output>{count}</output>
      <button onClick={() => move(Direction.Up)}>+</button>
    </div>
  );
}
