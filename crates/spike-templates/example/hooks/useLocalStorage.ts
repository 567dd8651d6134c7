import { useEffect, useState } from "react";

export function useLocalStorage<T>(key: string, initial: T) {
  const [value, setValue] = useState<T>(() => {
    const stored = globalThis.localStorage?.getItem(key);
    return stored === null || stored === undefined
      ? initial
      : (JSON.parse(stored) as T);
  });

  useEffect(() => {
    globalThis.localStorage?.setItem(key, JSON.stringify(value));
  }, [key, value]);

  return [value, setValue] as const;
}
