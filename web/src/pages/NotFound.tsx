import { useTitle } from "../lib/hooks";
import { Link } from "../lib/router";

export default function NotFound() {
  useTitle("Not found");
  return (
    <section>
      <h1 tabIndex={-1}>Page not found</h1>
      <p>
        There is nothing here. <Link to="/app">Launch a GPU</Link> or see <Link to="/app/rentals">your rentals</Link>.
      </p>
    </section>
  );
}
