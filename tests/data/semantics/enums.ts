enum Color {
  Red,
  Green = 5,
  Blue,
}
enum Label {
  Low = "low",
  High = "HIGH",
}
enum Bits {
  None = 0,
  A = 1 << 0,
  B = 1 << 1,
  AB = A | B,
}
const enum Size {
  Small = 1,
  Large = Small * 10,
  Name = "size",
}
enum Merged {
  X = 1,
}
enum Merged {
  Y = 2,
}

console.log(Color.Red, Color.Green, Color.Blue, Color[6], Color[Color.Red]);
console.log(Label.Low, Label.High, Object.keys(Label).join(","));
console.log(Bits.AB, Bits[3], Bits.None);
console.log(Size.Small, Size.Large, Size.Name);
console.log(Merged.X + Merged.Y, Merged[2]);
const pick = (c: Color): string => Color[c] ?? "?";
console.log(pick(Color.Blue), pick(99 as Color));
