import { renderToStaticMarkup } from "react-dom/server";
import type { ReactNode } from "react";

type CardProps = { title: string; children?: ReactNode; tags?: string[] };

function Card({ title, children, tags = [] }: CardProps) {
  return (
    <section className="card" data-count={tags.length}>
      <h2>{title}</h2>
      {tags.length > 0 ? (
        <ul>
          {tags.map((t, i) => (
            <li key={t} style={{ order: i }}>
              {t} &amp; more
            </li>
          ))}
        </ul>
      ) : (
        <p>no tags</p>
      )}
      <>{children}</>
    </section>
  );
}
const props = { title: "Spread", tags: ["a", "b"] };
console.log(renderToStaticMarkup(<Card {...props}>child &copy; 2026 {"text"}</Card>));
console.log(renderToStaticMarkup(<Card title="Empty" />));
