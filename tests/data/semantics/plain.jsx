import { renderToStaticMarkup } from "react-dom/server";

export const Greeting = ({ who }) => <p>Hello, {who}!</p>;
console.log(renderToStaticMarkup(<Greeting who="JSX" />));
