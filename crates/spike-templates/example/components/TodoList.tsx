export type Todo = { id: number; text: string; done: boolean };

type Props = {
  todos: readonly Todo[];
  onToggle: (id: Todo["id"]) => void;
};

export function TodoList({ todos, onToggle }: Props) {
  if (todos.length === 0) return <p>Nothing to do.</p>;
  return (
    <ul>
      {todos.map((todo) => (
        <li key={todo.id}>
          <label>
            <input
              type="checkbox"
              checked={todo.done}
              onChange={() => onToggle(todo.id)}
            />
            {todo.done ? <s>{todo.text}</s> : todo.text}
          </label>
        </li>
      ))}
    </ul>
  );
}
