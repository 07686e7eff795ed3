import { lazy, Suspense, useEffect } from "react";
import { Shell } from "./components/Shell";
import { Loading } from "./components/ui";
import { navigate, useLocation } from "./lib/router";
import { Login } from "./pages/Login";
import { ToastProvider } from "./state";

// Each /app page is its own chunk: the sign-in page loads only what it needs.
const Create = lazy(() => import("./pages/Create"));
const Rentals = lazy(() => import("./pages/Rentals"));
const Billing = lazy(() => import("./pages/Billing"));
const Settings = lazy(() => import("./pages/Settings"));
const Admin = lazy(() => import("./pages/Admin"));
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
