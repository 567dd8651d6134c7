/** @jsx h */
/** @jsxFrag Fragment */
import { createElement as h, Fragment } from "react";
import { renderToStaticMarkup } from "react-dom/server";

const List = ({ items }: { items: number[] }) => (
  <>
    {items.map((n) => (
      <b key={n}>{n * 2}</b>
    ))}
  </>
);
console.log(renderToStaticMarkup(<div id="classic"><List items={[1, 2, 3]} /></div>));
