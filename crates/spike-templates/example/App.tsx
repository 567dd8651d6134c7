import { useState } from "react";
import { Counter } from "./components/Counter";
import { TodoList, type Todo } from "./components/TodoList";
import { useLocalStorage } from "./hooks/useLocalStorage";
import { plural } from "./lib/format";

const initialTodos: Todo[] = [
  { id: 1, text: "Write a component", done: true },
  { id: 2, text: "Share the room link", done: false },
];

export default function App() {
  const [todos, setTodos] = useLocalStorage<Todo[]>("todos", initialTodos);
  const [title, setTitle] = useState("Hello from Spike");
  const open = todos.filter((t) => !t.done).length;

  return (
    <main className="app">
      <h1 onClick={() => setTitle(title.toUpperCase())}>{title}</h1>
      <Counter start={3} step={2} />
      <p>{plural(open, "task")} left</p>
      <TodoList
        todos={todos}
        onToggle={(id) =>
          setTodos(
            todos.map((t) => (t.id === id ? { ...t, done: !t.done } : t)),
          )}
      />
    </main>
  );
}
