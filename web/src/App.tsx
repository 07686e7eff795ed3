import { lazy, Suspense, useEffect } from "react";
import { Shell } from "./components/Shell";
import { Loading } from "./components/ui";
import { navigate, useLocation } from "./lib/router";
import { Login } from "./pages/Login";
import { ToastProvider } from "./state";

// Each /app page is its own chunk: the sign-in page loads only what it needs. The chunk of
// the page being opened is fetched at once, alongside the session check, not after it.
const CHUNKS = {
  "/app": () => import("./pages/Create"),
  "/app/rentals": () => import("./pages/Rentals"),
  "/app/billing": () => import("./pages/Billing"),
  "/app/settings": () => import("./pages/Settings"),
  "/app/admin": () => import("./pages/Admin"),
};
const first = CHUNKS[window.location.pathname.replace(/\/+$/, "") as keyof typeof CHUNKS];
if (first) void first();
const Create = lazy(CHUNKS["/app"]);
const Rentals = lazy(CHUNKS["/app/rentals"]);
const Billing = lazy(CHUNKS["/app/billing"]);
const Settings = lazy(CHUNKS["/app/settings"]);
const Admin = lazy(CHUNKS["/app/admin"]);
const NotFound = lazy(() => import("./pages/NotFound"));

function page(path: string) {
  switch (path.replace(/\/+$/, "") || "/") {
    case "/app":
      return <Create />;
    case "/app/rentals":
      return <Rentals />;
    case "/app/billing":
      return <Billing />;
    case "/app/settings":
      return <Settings />;
    case "/app/admin":
      return <Admin />;
    default:
      return <NotFound />;
  }
}

export function App() {
  const { path } = useLocation();
  const inApp = path === "/app" || path.startsWith("/app/");
  useEffect(() => {
    if (path !== "/login" && !inApp) navigate("/app", { replace: true });
  }, [path, inApp]);
  return (
    <ToastProvider>
      {path === "/login" ? (
        <Login />
      ) : inApp ? (
        <Shell>
          <Suspense fallback={<Loading what="page" />}>{page(path)}</Suspense>
        </Shell>
      ) : null}
    </ToastProvider>
  );
}
