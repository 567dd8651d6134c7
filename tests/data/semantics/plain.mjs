const gen = function* (n) {
  for (let i = 0; i < n; i++) yield i * i;
};
const total = [...gen(5)].reduce((a, b) => a + b, 0);
label: for (const x of [1, 2, 3]) {
  if (x === 2) continue label;
  console.log("x", x);
}
console.log(total, `template ${total > 10 ? "big" : "small"}`, /a(?<n>b)/.exec("ab")?.groups?.n);
