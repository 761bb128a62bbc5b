// The extension's service worker. It only wires entry points to the side panel: the toolbar button
// opens it, and a context-menu item on selected text opens it with an "explain this" request. It runs
// no model: an MV3 service worker is stopped after ~30 s without extension events and a single event
// may last at most 5 minutes, so a loaded model would be dropped between questions (and reloaded:
// seconds to minutes), and a long answer could be cut. See sidepanel.js for where the engine runs.

chrome.runtime.onInstalled.addListener(async () => {
  // onInstalled also runs on updates, when the item may still exist.
  await chrome.contextMenus.removeAll();
  chrome.contextMenus.create({
    id: "explain-selection",
    title: "Explain \u201c%s\u201d with the local model",
    contexts: ["selection"],
  });
});

chrome.sidePanel.setPanelBehavior({ openPanelOnActionClick: true }).catch((err) => console.error("setPanelBehavior:", err));

chrome.contextMenus.onClicked.addListener((info, tab) => {
  if (info.menuItemId !== "explain-selection" || !tab) return;
  // sidePanel.open() needs the user gesture of this click, so it is called before anything is awaited.
  // The click also grants activeTab for `tab`, which lets the panel read the page.
  chrome.sidePanel.open({ windowId: tab.windowId }).catch((err) => console.error("sidePanel.open:", err));
  // The panel picks the request up when it starts (or at once if it is already open).
  chrome.storage.session.set({
    pending: { kind: "explain", selection: info.selectionText ?? "", tabId: tab.id, at: Date.now() },
  });
});
