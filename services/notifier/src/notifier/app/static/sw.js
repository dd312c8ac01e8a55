// The staff app's service worker: shows pushed alerts and opens the app on a click.
// The app shell (its files and the screen kit's) is cached so the installed app opens offline;
// data always comes live.
const SHELL = "casebridge-staff-v2";
const FILES = [
  "/app/",
  "/app/app.js",
  "/app/app.css",
  "/app/i18n/en.json",
  "/app/i18n/zh-CN.json",
  "/app/icon.svg",
  "/app/manifest.webmanifest",
  "/assets/kit/kit.js",
  "/assets/kit/kit.css",
  "/assets/kit/service.js",
  "/assets/kit/i18n/en.json",
  "/assets/kit/i18n/zh-CN.json",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== SHELL).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !FILES.includes(url.pathname)) {
    return; // the API, the session and the live stream go to the network, untouched
  }
  // Network first (the files revalidate by ETag), the cached shell when offline.
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(SHELL).then((cache) => cache.put(event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(event.request)),
  );
});

self.addEventListener("push", (event) => {
  let alert = { title: "Casebridge", body: "Something needs your attention." };
  try {
    alert = event.data ? event.data.json() : alert;
  } catch (_) {
    alert.body = event.data ? event.data.text() : alert.body;
  }
  event.waitUntil(
    self.registration.showNotification(alert.title, {
      body: alert.body,
      tag: alert.tag,
      renotify: true,
      icon: "/app/icon.svg",
      data: { url: alert.url || "/app/" },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const target = new URL(event.notification.data.url, self.location.origin).href;
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      for (const w of windows) {
        if (w.url.startsWith(self.location.origin + "/app/")) {
          w.navigate(target);
          return w.focus();
        }
      }
      return self.clients.openWindow(target);
    }),
  );
});
