/** `plural(1, "task")` is "1 task"; `plural(2, "task")` is "2 tasks". */
export const plural = (n: number, word: string): string =>
  `${n} ${word}${n === 1 ? "" : "s"}`;
